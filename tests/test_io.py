"""Weights, checkpoints (atomic writes) and the torch-free .pth reader.

The .pth files are written here with the standard library only: a zip archive
``<prefix>/data.pkl`` + ``<prefix>/data/<key>`` whose pickle refers to
``torch._utils._rebuild_tensor_v2`` and ``torch.<X>Storage`` exactly as
``torch.save`` does — the names are provided by stand-in modules while
pickling, so no torch is needed (or imported) anywhere.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import types
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from pacnd import io as pio
from pacnd import nn, optim
from pacnd.autograd import Tensor

STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                 np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                 np.dtype(np.int32): "IntStorage", np.dtype(np.uint8): "ByteStorage",
                 np.dtype(np.bool_): "BoolStorage"}


class FakeStorage:
    def __init__(self, key, array, type_name=None):
        self.key = str(key)
        self.array = np.array(array, order="C").ravel()
        self.type_name = type_name or STORAGE_NAMES[self.array.dtype]


class FakeTensor:
    """Pickles like a torch.Tensor: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce_ex__(self, proto):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return (rebuild, (self.storage, self.offset, tuple(self.size), tuple(self.stride), False,
                          OrderedDict()))


def tensor(array, key):
    a = np.array(array, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
    strides = tuple(s // a.itemsize for s in a.strides) if a.ndim else ()
    return FakeTensor(FakeStorage(key, a), 0, a.shape, strides)


@pytest.fixture
def fake_torch(monkeypatch):
    """Stand-in ``torch`` / ``torch._utils`` modules, only while pickling."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: pacnd reads the file
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in set(STORAGE_NAMES.values()) | {"BFloat16Storage"}:
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def write_pth(path, obj, torch, *, prefix="archive", byteorder="little"):
    import io

    storages = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, FakeStorage):
                storages[o.key] = o
                return ("storage", getattr(torch, o.type_name), o.key, "cpu", o.array.size)
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", buf.getvalue())
        zf.writestr(f"{prefix}/byteorder", byteorder)
        for key, st in storages.items():
            arr = st.array
            if byteorder == "big":
                arr = arr.astype(arr.dtype.newbyteorder(">"))
            zf.writestr(f"{prefix}/data/{key}", arr.tobytes())
        zf.writestr(f"{prefix}/version", "3\n")
    return path


# ------------------------------------------------------------------ .pth
def test_pth_dtypes_layouts_and_shared_storage(tmp_path, fake_torch):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    base = rng.standard_normal(40)
    shared = FakeStorage("7", base)
    bf_bits = np.array([0x3F80, 0xC000, 0x4049], dtype=np.uint16)  # 1, -2, 3.140625
    sd = OrderedDict([
        ("conv.weight", tensor(w, "0")),
        ("conv.bias", tensor(np.arange(4, dtype=np.float64), "1")),
        ("bn.num_batches_tracked", tensor(np.array(17, dtype=np.int64), "2")),
        ("half", tensor(np.array([0.5, -1.25], dtype=np.float16), "3")),
        # a transposed, offset view into a storage shared with "flat"
        ("view_t", FakeTensor(shared, 5, (3, 4), (1, 3))),
        ("flat", FakeTensor(shared, 0, (40,), (1,))),
        ("bf16", FakeTensor(FakeStorage("9", bf_bits, "BFloat16Storage"), 0, (3,), (1,))),
        ("mask", tensor(np.array([True, False]), "4")),
    ])
    sd_obj = sd
    path = write_pth(tmp_path / "w.pth", sd_obj, fake_torch)
    out = pio.load_pth(path)
    assert list(out) == list(sd)
    np.testing.assert_array_equal(out["conv.weight"], w)
    assert out["conv.weight"].dtype == np.float32
    assert out["conv.bias"].dtype == np.float64
    assert out["bn.num_batches_tracked"].shape == () and out["bn.num_batches_tracked"] == 17
    np.testing.assert_array_equal(out["half"], [0.5, -1.25])
    np.testing.assert_array_equal(out["view_t"], base[5:17].reshape(4, 3).T)
    np.testing.assert_array_equal(out["flat"], base)
    np.testing.assert_array_equal(out["bf16"], [1.0, -2.0, 3.140625])
    np.testing.assert_array_equal(out["mask"], [True, False])
    assert out["view_t"].flags.writeable and out["view_t"].flags.c_contiguous


def test_pth_big_endian_and_other_prefix(tmp_path, fake_torch):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = write_pth(tmp_path / "b.pth", {"a": tensor(a, "0")}, fake_torch,
                     prefix="weights_epoch_100", byteorder="big")
    np.testing.assert_array_equal(pio.load_pth(path)["a"], a)


def test_pth_checkpoint_dict_key_detection_and_prefix(tmp_path, fake_torch):
    w = np.ones((2, 2), dtype=np.float32)
    ckpt = {"epoch": 3, "args": argparse.Namespace(lr=1e-4),
            "state_dict": OrderedDict([("module.a.weight", tensor(w, "0"))])}
    path = write_pth(tmp_path / "c.pth", ckpt, fake_torch)
    raw = pio.load_pth(path)
    assert raw["epoch"] == 3 and raw["args"].lr == 1e-4
    sd = pio.load_pth_state_dict(path)
    assert list(sd) == ["a.weight"]
    assert list(pio.load_pth_state_dict(path, key="state_dict", strip_prefix=None)) == [
        "module.a.weight"]
    with pytest.raises(KeyError, match="no entry 'model'"):
        pio.load_pth_state_dict(path, key="model")


class RefLike(nn.Module):
    """Same attribute names as the reference PacJointUpsample (a small one)."""

    def __init__(self, rng):
        super().__init__()
        self.branch_t = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(1, 4, 5, padding=2, rng=rng)), ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(4, 4, 5, padding=2, rng=rng))]))
        self.branch_g = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 2, 5, padding=2, rng=rng))]))
        self.up_convts = nn.ModuleList([nn.PacConvTranspose2d(4, 1, 5, stride=2, padding=2,
                                                              output_padding=1, rng=rng)])

    def forward(self, low, guide):
        return self.up_convts[0](self.branch_t(low), self.branch_g(guide))


def test_load_pth_into_reference_named_model(tmp_path, fake_torch):
    src = RefLike(rng=1)
    sd = OrderedDict((k, tensor(v, str(i))) for i, (k, v) in enumerate(src.state_dict().items()))
    path = write_pth(tmp_path / "ref.pth", sd, fake_torch)
    dst = RefLike(rng=2)
    low = np.random.default_rng(3).random((1, 1, 4, 4)).astype(np.float32)
    guide = np.random.default_rng(4).random((1, 3, 8, 8)).astype(np.float32)
    assert not np.allclose(dst(low, guide).data, src(low, guide).data)
    assert pio.load_pth_into(dst, path) == ([], [])
    np.testing.assert_array_equal(dst(low, guide).data, src(low, guide).data)

    # renaming, and errors naming keys and shapes
    renamed = pio.load_pth_into(dst, path, rename=lambda k: None if "branch_g" in k else k,
                                strict=False)
    assert renamed[0] == ["branch_g.conv1.weight", "branch_g.conv1.bias"]
    small = RefLike(rng=0)
    small.up_convts[0] = nn.PacConvTranspose2d(4, 2, 5, stride=2, padding=2, output_padding=1)
    msg = r"'up_convts.0.weight': the state dict has \(4, 1, 5, 5\), the model expects \(4, 2"
    with pytest.raises(nn.StateDictError, match=msg):
        pio.load_pth_into(small, path)


def test_pth_refuses_code_and_bad_layouts(tmp_path, fake_torch):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = write_pth(tmp_path / "evil.pth", {"a": Evil()}, fake_torch)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load (posix|nt)\.system"):
        pio.load_pth(path)

    st = FakeStorage("0", np.zeros(6, dtype=np.float32))
    path = write_pth(tmp_path / "oob.pth", {"a": FakeTensor(st, 2, (2, 3), (3, 1))}, fake_torch)
    with pytest.raises(pickle.UnpicklingError, match="reaches element 7 of a storage with 6"):
        pio.load_pth(path)

    (tmp_path / "legacy.pth").write_bytes(b"\x80\x02not a zip")
    with pytest.raises(ValueError, match="not a zip-format PyTorch file"):
        pio.load_pth(tmp_path / "legacy.pth")


def test_pth_cross_check_with_torch_if_available(tmp_path):
    torch = pytest.importorskip("torch")  # optional: CI has no torch
    sd = OrderedDict(w=torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),
                     b=torch.ones(3, dtype=torch.float64))
    torch.save(sd, tmp_path / "t.pth")
    out = pio.load_pth(tmp_path / "t.pth")
    np.testing.assert_array_equal(out["w"], np.arange(12, dtype=np.float32).reshape(3, 4).T)
    np.testing.assert_array_equal(out["b"], np.ones(3))


# ------------------------------------------------------- weights, checkpoints
def test_weights_roundtrip(tmp_path):
    net = RefLike(rng=1)
    pio.save_weights(tmp_path / "w.npz", net)
    other = RefLike(rng=2)
    other.load_state_dict(pio.load_weights(tmp_path / "w.npz"))
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k], v)
    with pytest.raises(TypeError, match="mapping"):
        pio.save_weights(tmp_path / "x.npz", 3)


def test_checkpoint_roundtrip(tmp_path):
    net = RefLike(rng=1)
    opt = optim.Adam(net.parameters(), lr=1e-3)
    sched = optim.MultiStepLR(opt, [2], gamma=0.1)
    for p in net.parameters():
        p.grad = np.ones_like(p.data)
    opt.step()
    sched.step()
    rng = np.random.default_rng(9)
    rng.random(5)
    pio.save_checkpoint(tmp_path / "c.npz", model=net, optimizer=opt, scheduler=sched, rng=rng,
                        step=42, extra={"best": 0.5, "hist": [1, 2], "arr": np.arange(3)})
    expect_next = rng.random(3)

    net2 = RefLike(rng=2)
    opt2 = optim.Adam(net2.parameters(), lr=1e-3)
    sched2 = optim.MultiStepLR(opt2, [2], gamma=0.1)
    rng2 = np.random.default_rng(0)
    info = pio.load_checkpoint(tmp_path / "c.npz", model=net2, optimizer=opt2, scheduler=sched2,
                               rng=rng2)
    assert info["step"] == 42 and info["extra"]["best"] == 0.5
    np.testing.assert_array_equal(info["extra"]["arr"], np.arange(3))
    np.testing.assert_array_equal(rng2.random(3), expect_next)
    assert sched2.last_epoch == 1 and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    for p, q in zip(net.parameters(), net2.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
        for k in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(opt.state[id(p)][k], opt2.state[id(q)][k])
    # the model part is also readable as plain weights
    assert set(pio.load_weights(tmp_path / "c.npz")) == set(net.state_dict())
    with pytest.raises(ValueError, match="holds no optimizer state"):
        pio.save_checkpoint(tmp_path / "m.npz", model=net)
        pio.load_checkpoint(tmp_path / "m.npz", optimizer=opt2)
    with pytest.raises(ValueError, match="RNG is PCG64"):
        pio.load_checkpoint(tmp_path / "c.npz", rng=np.random.Generator(np.random.MT19937(0)))


def test_interrupted_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    net = RefLike(rng=1)
    path = tmp_path / "ckpt.npz"
    pio.save_checkpoint(path, model=net, step=1)
    old = net.state_dict()
    for p in net.parameters():
        p.data += 1

    def crash(src, dst):
        raise OSError("simulated crash after the temp file was written")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        pio.save_checkpoint(path, model=net, step=2)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]  # no temp file left behind
    info = pio.load_checkpoint(path, model=RefLike(rng=3))
    assert info["step"] == 1
    for k, v in old.items():
        np.testing.assert_array_equal(info["model"][k], v)


def test_tree_rejects_unknown_objects(tmp_path):
    with pytest.raises(TypeError, match="cannot save a object at /x"):
        pio.save_tree(tmp_path / "t.npz", {"x": object()})
    tree = {"t": (1, "a", None), "d": {1: np.ones(2)}, "t2": Tensor(np.zeros(2))}
    pio.save_tree(tmp_path / "t.npz", tree)
    back = pio.load_tree(tmp_path / "t.npz")
    assert back["t"] == (1, "a", None)
    np.testing.assert_array_equal(back["d"][1], np.ones(2))
    np.testing.assert_array_equal(back["t2"], np.zeros(2))


def test_atomic_write_gives_normal_permissions(tmp_path):
    import os
    import stat

    from pacnd.io.checkpoint import atomic_write

    umask = os.umask(0o022)
    try:
        path = tmp_path / "w.bin"
        atomic_write(str(path), lambda f: f.write(b"x"), mode="wb")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    finally:
        os.umask(umask)
