"""Learning PAC-CRF parameters through pacnd.train, and saving/loading them."""

from __future__ import annotations

import numpy as np
import pytest

from pacnd.crf import (PacCRF, dense_crf_mapping, evaluate_loss, fit_crf, learnable,
                       load_crf, refine, save_crf)


def _toy(seed, size=(24, 32)):
    """Two colour regions; noisy unaries that favour the wrong label in blobs."""
    rng = np.random.default_rng(seed)
    H, W = size
    truth = np.zeros(size, np.int64)
    truth[:, W // 2 + int(rng.integers(-4, 4)):] = 1
    img = np.where(truth[..., None] == 1, [190, 60, 50], [40, 90, 170]).astype(np.float32)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    logits = np.where(truth[..., None] == np.arange(2), 0.8, -0.8).astype(np.float32)
    logits += rng.normal(0, 1.0, logits.shape).astype(np.float32)
    truth[0, 0] = 255  # an ignored pixel
    return img, logits, truth


def test_learning_reduces_the_loss():
    data = [_toy(s) for s in range(4)]
    imgs, scores, labels = zip(*data)
    crf = PacCRF(2, 3, [dict(kernel_size=5, compat="potts", feat_scale=0.02,
                             normalize="symmetric"),
                        dict(kernel_size=3, dilation=2, compat="2d", feat_scale=0.05)],
                 learn_pairwise_weights=True)
    before = evaluate_loss(crf, imgs, scores, labels, kind="logits")
    res = fit_crf(crf, imgs, scores, labels, kind="logits", steps=25, lr=0.05, crop=(20, 28),
                  rng=0)
    after = evaluate_loss(crf, imgs, scores, labels, kind="logits")
    assert res.step == 25 and len(res.history) == 25
    assert after < 0.8 * before, (before, after)
    # the learned parameters moved, including the guide scaling
    assert crf.feat_scales[0].data != pytest.approx(0.02)


def test_learning_is_reproducible():
    data = [_toy(s) for s in range(2)]
    imgs, scores, labels = zip(*data)
    out = []
    for _ in range(2):
        crf = learnable(dense_crf_mapping((24, 32), 2, sxy_bilateral=20, iterations=2))
        fit_crf(crf, imgs, scores, labels, kind="logits", steps=3, crop=(16, 16), rng=7)
        out.append(crf.state_dict())
    for k in out[0]:
        np.testing.assert_array_equal(out[0][k], out[1][k])


def test_learnable_copy_keeps_the_behaviour():
    img, logits, _ = _toy(0)
    crf = dense_crf_mapping(img.shape[:2], 2, sxy_bilateral=20)
    U = logits.transpose(2, 0, 1)[None]
    f = img.transpose(2, 0, 1)[None].astype(np.float32)
    a = crf.infer(U, f, output="softmax")
    for kw in ({}, {"compat": "2d", "channels": 3}):
        b = learnable(crf, **kw)
        assert any(p.requires_grad for _, p in b.named_parameters()
                   if _.startswith("pairwise_weights"))
        np.testing.assert_allclose(b.infer(U, f, output="softmax"), a, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    img, logits, _ = _toy(1)
    crf = learnable(dense_crf_mapping(img.shape[:2], 2, sxy_bilateral=20), channels=3,
                    compat="2d")
    rng = np.random.default_rng(0)
    for _, p in crf.named_parameters():
        p.data[...] += rng.normal(0, 0.01, p.shape).astype(p.dtype)
    path = save_crf(tmp_path / "crf.npz", crf, extra={"note": "test"})
    back = load_crf(path)
    assert back.config() == crf.config()
    sa, sb = crf.state_dict(), back.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])
    a = refine(img, logits, kind="logits", params=crf)
    b = refine(img, logits, kind="logits", params=str(path))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="learned for 2"):
        refine(img, np.concatenate([logits, logits[..., :1]], axis=2), kind="logits",
               params=str(path))


def test_fit_crf_validation():
    img, logits, truth = _toy(0)
    crf = PacCRF(2, 1, [dict(kernel_size=3, compat="potts")])
    with pytest.raises(TypeError, match="PacCRF"):
        fit_crf(object(), [img], [logits], [truth], kind="logits")
    with pytest.raises(ValueError, match="steps"):
        fit_crf(crf, [img], [logits], [truth], kind="logits", steps=0)
    with pytest.raises(ValueError, match="as many images"):
        fit_crf(crf, [img, img], [logits], [truth], kind="logits")
    with pytest.raises(ValueError, match="label 7"):
        fit_crf(crf, [img], [logits], [np.full_like(truth, 7)], kind="logits")
    with pytest.raises(ValueError, match="crop"):
        fit_crf(crf, [img], [logits], [truth], kind="logits", crop=(0, 3))
