import sys, json, numpy as np
from pacnd.models import load_upsampler, build_model
from pacnd.models.recipe import pool_sources, Recipe, build_from_recipe
from pacnd.data.mixture import MixedPairs
from pacnd.autograd import Tensor
import pacnd.functional as F
from pacnd.models.networks import fold_channels, repeat_for_channels
r = Recipe(**json.load(open(sys.argv[2])))
m = load_upsampler(sys.argv[1]) if sys.argv[1] != "init" else build_from_recipe(r)
src = pool_sources('/work/shared/data/train', 'depth')
data = MixedPairs(src, r.factor, kind='depth', weights=r.weights, lowres_mode='center', crop=r.crop,
                  batch_size=1, scale=r.scale, color_jitter=r.color_jitter, normalize=r.normalize)
b = data(np.random.default_rng(0))
def st(name, t):
    a = np.asarray(t.data); print(f"{name:14s} std {a.std():9.3e} zero {100*(a<=0).mean():5.1f}%  shape {a.shape}")
x, C = fold_channels(Tensor(b["low"])); guide = Tensor(b["guide"])
st("low", x)
for i, mod in enumerate(m.branch_t): x = mod(x)
st("branch_t", x)
g = m.branch_g(guide); st("branch_g", g)
for i, up in enumerate(m.up_convts):
    gi = g[:, i * m.k_ch:(i + 1) * m.k_ch]
    s = 2 ** (m.num_ups - 1 - i)
    if s != 1: gi = F.interpolate(gi, scale_factor=1.0 / s, mode="bilinear", align_corners=False)
    x = F.relu(up(x, repeat_for_channels(gi, C))); st(f"up{i}", x)
mods = list(m.branch_f)
for k, mod in enumerate(mods):
    x = mod(x); st(f"f{k}", x)
