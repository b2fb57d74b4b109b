import sys, json, numpy as np
from pacnd.models import load_upsampler
from pacnd.models.recipe import pool_sources, Recipe
from pacnd.models.training import upsampling_loss
from pacnd.data.mixture import MixedPairs
m = load_upsampler(sys.argv[1]); m.train()
r = Recipe(**json.load(open(sys.argv[2])))
src = pool_sources('/work/shared/data/train', 'depth')
data = MixedPairs(src, r.factor, kind='depth', weights=r.weights, lowres_mode='center', crop=r.crop,
                  batch_size=2, scale=r.scale, color_jitter=r.color_jitter, normalize=r.normalize)
b = data(np.random.default_rng(0))
loss, _ = upsampling_loss(m, b, border=6)
loss.backward()
print("loss", float(np.asarray(loss.data)))
for n, p in m.named_parameters():
    g = np.asarray(p.grad) if p.grad is not None else None
    w = np.asarray(p.data)
    print(f"{n:32s} |w| {np.linalg.norm(w):9.3e}  |g| {np.linalg.norm(g) if g is not None else float('nan'):9.3e}")
