"""Tests of snnlearn.data: tiny generated fixtures (always run) and the shared offline copies
(skipped when absent)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from snnlearn.data import (
    DATASETS,
    ArrayDataset,
    DatasetCorruptError,
    DatasetNotFoundError,
    load_dataset,
    split_train_val,
)
from snnlearn.data import base as data_base
from snnlearn.data import cifar as cifar_mod
from snnlearn.data import mnist as mnist_mod
from snnlearn.data.download import ChecksumError, download_url
from snnlearn.data.nmnist import decode_events

# The offline copies of the datasets: the first folder of $SNNLEARN_DATA (tests on them skip without it).
SHARED = Path(next((p for p in os.environ.get("SNNLEARN_DATA", "").split(os.pathsep) if p.strip()), "") or "/nonexistent")
FMNIST_SYSTEM = Path(mnist_mod.FMNIST.system_paths[0])  # Debian's dataset-fashion-mnist, where installed


@pytest.fixture
def env(tmp_path, monkeypatch):
    """No $SNNLEARN_DATA, a private cache, no downloads, fresh warn-once memory."""
    monkeypatch.delenv("SNNLEARN_DATA", raising=False)
    monkeypatch.setenv("SNNLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SNNLEARN_OFFLINE", "1")
    monkeypatch.setattr(data_base, "_WARNED", set())
    return tmp_path


@pytest.fixture
def offline(monkeypatch):
    """For tests on the real data: keep the user's cache (fast reloads) but never download."""
    monkeypatch.setenv("SNNLEARN_OFFLINE", "1")
    monkeypatch.delenv("SNNLEARN_DATA", raising=False)


# --------------------------------------------------------------------------- IDX helpers


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


def write_idx(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stems = mnist_mod.FILES[split]
    out = []
    for stem, arr in zip(stems, (images, labels)):
        raw = idx_bytes(arr)
        p = folder / (stem + (".gz" if gz else ""))
        p.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
        out.append(p)
    return out[0], out[1]


def tiny_mnist(n=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


# --------------------------------------------------------------------------- ArrayDataset / split


def test_array_dataset_and_subset():
    x = torch.arange(10 * 4, dtype=torch.uint8).reshape(10, 1, 2, 2)
    y = torch.tensor([0, 1] * 5)
    ds = ArrayDataset(x, y, ["a", "b"], "toy", "train")
    assert len(ds) == 10 and ds.input_shape == (1, 2, 2) and ds.n_classes == 2
    assert ds.labels.dtype == torch.int64
    xi, yi = ds[3]
    assert torch.equal(xi, x[3]) and int(yi) == 1
    sub = ds.subset([4, 1])
    assert isinstance(sub, ArrayDataset) and sub.name == "toy" and sub.classes == ["a", "b"]
    assert torch.equal(sub.inputs, x[[4, 1]]) and sub.labels.tolist() == [0, 1]
    assert ds.class_counts() == [5, 5]
    with pytest.raises(ValueError):
        ArrayDataset(x, y[:3], ["a", "b"], "toy")
    with pytest.raises(ValueError):
        ArrayDataset(x, y + 5, ["a", "b"], "toy")


def test_split_train_val():
    n = 100
    ds = ArrayDataset(torch.arange(n, dtype=torch.uint8).reshape(n, 1, 1, 1), torch.arange(n) % 3, ["0", "1", "2"], "toy", "train")
    tr, va = split_train_val(ds, 20, seed=5)
    assert len(tr) == 80 and len(va) == 20
    a, b = set(tr.inputs.flatten().tolist()), set(va.inputs.flatten().tolist())
    assert not a & b and a | b == set(range(n))
    assert tr.inputs.flatten().tolist() == sorted(a)  # original order kept
    tr2, va2 = split_train_val(ds, 20, seed=5)
    assert torch.equal(va.inputs, va2.inputs) and torch.equal(tr.inputs, tr2.inputs)
    _, va3 = split_train_val(ds, 20, seed=6)
    assert not torch.equal(va.inputs, va3.inputs)
    same, none = split_train_val(ds, 0, seed=0)
    assert same is ds and none is None
    _, vf = split_train_val(ds, 0.1, seed=0)
    assert len(vf) == 10
    for bad in (-1, n, n + 5):
        with pytest.raises(ValueError):
            split_train_val(ds, bad, seed=0)


def test_registry():
    assert set(DATASETS) == {"mnist", "fmnist", "cifar10", "caltech", "nmnist"}
    assert DATASETS["caltech"].splits == ("train", "val", "test")
    assert DATASETS["caltech"].input_shape == (1, 160, 250)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet", "train")
    with pytest.raises(ValueError, match="splits"):
        load_dataset("mnist", "val")


# --------------------------------------------------------------------------- MNIST / IDX


@pytest.mark.parametrize("layout", ["", "mnist", "MNIST/raw"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(env, layout, gz):
    root = env / "data"
    imgs, labs = tiny_mnist(7)
    write_idx(root / layout if layout else root, "test", imgs, labs, gz)
    ds = load_dataset("mnist", "test", root=root, verify=False)
    assert ds.inputs.dtype == torch.uint8 and ds.inputs.shape == (7, 1, 28, 28)
    assert np.array_equal(ds.inputs[:, 0].numpy(), imgs)
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == labs.tolist()
    assert ds.classes == [str(i) for i in range(10)] and ds.name == "mnist" and ds.split == "test"
    with pytest.raises(DatasetNotFoundError):  # only the test split is there
        load_dataset("mnist", "train", root=root, verify=False)


def test_idx_env_var_lookup(env, monkeypatch):
    imgs, labs = tiny_mnist(3)
    write_idx(env / "shared" / "fashion-mnist", "train", imgs, labs, gz=True)
    monkeypatch.setenv("SNNLEARN_DATA", str(env / "shared"))
    monkeypatch.setattr(mnist_mod, "FMNIST", dataclasses.replace(mnist_mod.FMNIST, system_paths=()))
    ds = load_dataset("fmnist", "train", verify=False)
    assert len(ds) == 3 and ds.classes[0] == "T-shirt/top"
    assert ds.meta["source"] == str(env / "shared" / "fashion-mnist")


def test_idx_checksum_is_verified(env):
    root = env / "data"
    imgs, labs = tiny_mnist(5)
    write_idx(root, "test", imgs, labs, gz=True)
    with pytest.raises(DatasetCorruptError, match=r"sha256.*verify=False") as ei:
        load_dataset("mnist", "test", root=root)
    assert "t10k-images-idx3-ubyte.gz" in str(ei.value)


def _corruptions():
    imgs, labs = tiny_mnist(4)
    good_img, good_lab = idx_bytes(imgs), idx_bytes(labs)
    bad_magic = b"\x00\x00\x08\x02" + good_img[4:]
    yield "bad magic", bad_magic, good_lab, "magic"
    yield "truncated", good_img[:-10], good_lab, "truncated"
    yield "trailing", good_img + b"\x00", good_lab, "trailing"
    yield "count mismatch", good_img, idx_bytes(labs[:3]), "4 images but"
    yield "label range", good_img, idx_bytes(np.array([1, 2, 3, 12], np.uint8)), "out of range"
    yield "wrong size", idx_bytes(np.zeros((4, 28, 27), np.uint8)), good_lab, "28x28"
    yield "short header", b"\x00\x00", good_lab, "too short"


@pytest.mark.parametrize("case", list(_corruptions()), ids=lambda c: c[0])
def test_idx_corrupt(env, case):
    _, img, lab, pattern = case
    root = env / "data"
    root.mkdir()
    (root / "t10k-images-idx3-ubyte").write_bytes(img)
    (root / "t10k-labels-idx1-ubyte").write_bytes(lab)
    with pytest.raises(DatasetCorruptError, match=pattern) as ei:
        load_dataset("mnist", "test", root=root, verify=False)
    assert str(root) in str(ei.value)


def test_idx_truncated_gzip(env):
    root = env / "data"
    imgs, labs = tiny_mnist(4)
    img_path, _ = write_idx(root, "test", imgs, labs, gz=True)
    img_path.write_bytes(img_path.read_bytes()[:-12])
    with pytest.raises(DatasetCorruptError, match="gzip") as ei:
        load_dataset("mnist", "test", root=root, verify=False)
    assert str(img_path) in str(ei.value)


# --------------------------------------------------------------------------- not found / download


@pytest.mark.parametrize("name", ["mnist", "fmnist", "cifar10", "caltech", "nmnist"])
def test_missing_dataset_message(env, monkeypatch, name):
    empty = env / "empty"
    empty.mkdir()
    monkeypatch.setenv("SNNLEARN_DATA", str(empty))
    monkeypatch.setattr(mnist_mod, "FMNIST", dataclasses.replace(mnist_mod.FMNIST, system_paths=()))
    with pytest.raises(DatasetNotFoundError) as ei:
        load_dataset(name, "train")
    msg = str(ei.value)
    assert str(empty) in msg and str(env / "cache" / "data") in msg
    assert "SNNLEARN_DATA" in msg and "--data-dir" in msg
    expected = {
        "mnist": ["train-images-idx3-ubyte", "ossci-datasets", "disabled"],
        "fmnist": ["apt-get install -y dataset-fashion-mnist", "train-labels-idx1-ubyte", "disabled"],
        "cifar10": ["cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/", "disabled"],
        "caltech": ["Face/", "Motor/"],
        "nmnist": ["Train.zip", ".bin"],
    }[name]
    for part in expected:
        assert part in msg, (part, msg)
    # explicit download=False also wins over an environment that allows downloads
    monkeypatch.delenv("SNNLEARN_OFFLINE")
    if name in ("mnist", "fmnist", "cifar10"):
        with pytest.raises(DatasetNotFoundError, match="disabled"):
            load_dataset(name, "train", download=False)


def test_download_file_url(tmp_path):
    src = tmp_path / "payload.bin"
    payload = os.urandom(3000)
    src.write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "out" / "payload.bin"
    assert download_url(src.as_uri(), dest, good, progress=False) == dest
    assert dest.read_bytes() == payload
    dest2 = tmp_path / "out" / "bad.bin"
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        download_url(src.as_uri(), dest2, "0" * 64, progress=False)
    assert not dest2.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["payload.bin"]  # no .part left
    # checksum of the gunzipped content (how MNIST is checked)
    gz = tmp_path / "payload.gz"
    gz.write_bytes(gzip.compress(payload))
    dest3 = tmp_path / "out" / "p.gz"
    download_url(gz.as_uri(), dest3, good, hash_uncompressed=True, progress=False)
    assert gzip.decompress(dest3.read_bytes()) == payload
    with pytest.raises(OSError):
        download_url((tmp_path / "nope").as_uri(), tmp_path / "out" / "nope", good, progress=False)
    assert not (tmp_path / "out" / "nope").exists()
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_mnist_download_path(env, monkeypatch):
    """The download branch of load_dataset, against a file:// mirror of tiny IDX files."""
    mirror = env / "mirror"
    imgs, labs = tiny_mnist(6)
    write_idx(mirror, "test", imgs, labs, gz=True)
    sums = dict(mnist_mod.MNIST.sha256)
    sums["t10k-images-idx3-ubyte"] = hashlib.sha256(idx_bytes(imgs)).hexdigest()
    sums["t10k-labels-idx1-ubyte"] = hashlib.sha256(idx_bytes(labs)).hexdigest()
    spec = dataclasses.replace(mnist_mod.MNIST, mirrors=(mirror.as_uri() + "/",), sha256=sums, system_paths=())
    monkeypatch.setattr(mnist_mod, "MNIST", spec)
    ds = load_dataset("mnist", "test", download=True, progress=False)
    assert np.array_equal(ds.inputs[:, 0].numpy(), imgs)
    assert ds.meta["source"] == str(env / "cache" / "data" / "mnist")
    ds2 = load_dataset("mnist", "test")  # now found in the download folder, offline
    assert torch.equal(ds2.inputs, ds.inputs)
    # a mirror with the wrong content: nothing is kept, DatasetNotFoundError explains why
    bad = dataclasses.replace(spec, sha256={**sums, "train-images-idx3-ubyte": "0" * 64, "train-labels-idx1-ubyte": "0" * 64})
    write_idx(mirror, "train", imgs, labs, gz=True)
    monkeypatch.setattr(mnist_mod, "MNIST", bad)
    with pytest.raises(DatasetNotFoundError, match="sha256 mismatch"):
        load_dataset("mnist", "train", download=True, progress=False)
    assert not any("train" in p.name for p in (env / "cache" / "data" / "mnist").iterdir())


# --------------------------------------------------------------------------- N-MNIST


def encode_events(x, y, p, t) -> bytes:
    x, y, p, t = (np.asarray(a, dtype=np.int64) for a in (x, y, p, t))
    ev = np.empty((len(x), 5), dtype=np.uint8)
    ev[:, 0] = x
    ev[:, 1] = y
    ev[:, 2] = (p << 7) | ((t >> 16) & 0x7F)
    ev[:, 3] = (t >> 8) & 0xFF
    ev[:, 4] = t & 0xFF
    return ev.tobytes()


def test_nmnist_decode_and_bin(env):
    # (x, y, polarity, t_us)
    events = [
        (0, 0, 0, 0), (0, 0, 0, 2999), (33, 5, 1, 3000), (2, 3, 1, 5999),
        (4, 6, 1, 8999),  # frame 2
        (1, 1, 1, 9000),  # frame 3 >= n_frames=3 -> dropped
        (7, 8, 0, 8_388_607),  # max 23-bit timestamp, dropped (beyond n_frames)
    ]
    x, y, p, t = (np.array(c) for c in zip(*events))
    raw = encode_events(x, y, p, t)
    dx, dy, dp, dt = decode_events(raw)
    assert dx.tolist() == x.tolist() and dy.tolist() == y.tolist()
    assert dp.tolist() == p.tolist() and dt.tolist() == t.tolist()

    root = env / "nm"
    for split_dir, label, stem, payload in [
        ("Train", 3, "00002", raw), ("Train", 1, "00001", encode_events([5, 0], [6, 0], [1, 0], [10, 299_000])), ("Test", 0, "00001", raw),
    ]:
        d = root / "nmnist" / split_dir / str(label)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{stem}.bin").write_bytes(payload)
    with pytest.warns(UserWarning, match="subset"):
        ds = load_dataset("nmnist", "train", root=root, frame_ms=3.0, n_frames=3)
    assert ds.inputs.shape == (2, 3, 2, 34, 34) and ds.inputs.dtype == torch.uint8
    assert ds.labels.tolist() == [1, 3]  # ordered by sample index (file stem)
    assert ds.meta["complete"] is False
    v = ds.inputs[1]
    assert int(v[0, 0, 0, 0]) == 2  # two OFF events at (0,0) in frame 0
    assert int(v[1, 1, 5, 33]) == 1  # ON event at x=33, y=5, t=3000 -> frame 1 (index is [frame, pol, y, x])
    assert int(v[1, 1, 3, 2]) == 1
    assert int(v[2, 1, 6, 4]) == 1
    assert int(v.sum()) == 5  # the two late events are dropped
    assert int(ds.inputs[0].sum()) == 1 and int(ds.inputs[0, 0, 1, 6, 5]) == 1
    # frame size changes the binning: one 10 ms frame holds everything up to 9999 us
    ds10 = load_dataset("nmnist", "train", root=root, frame_ms=10.0, n_frames=1)
    assert ds10.inputs.shape == (2, 1, 2, 34, 34) and int(ds10.inputs[1].sum()) == 6
    # the same files inside the official zip layout
    zroot = env / "zipped" / "nmnist"
    zroot.mkdir(parents=True)
    with zipfile.ZipFile(zroot / "Train.zip", "w") as zf:
        for f in sorted((root / "nmnist" / "Train").rglob("*.bin")):
            zf.write(f, f.relative_to(root / "nmnist").as_posix())
    with pytest.warns(UserWarning, match="subset"):  # another location: warned again, once
        dz = load_dataset("nmnist", "train", root=env / "zipped", n_frames=3)
    assert torch.equal(dz.inputs, ds.inputs) and torch.equal(dz.labels, ds.labels)


def test_nmnist_corrupt(env):
    d = env / "nmnist" / "Test" / "2"
    d.mkdir(parents=True)
    (d / "00001.bin").write_bytes(b"\x00" * 7)
    with pytest.raises(DatasetCorruptError, match="multiple of 5") as ei:
        load_dataset("nmnist", "test", root=env)
    assert "00001.bin" in str(ei.value)
    (d / "00001.bin").write_bytes(encode_events([40], [0], [0], [0]))
    with pytest.raises(DatasetCorruptError, match="34x34"):
        load_dataset("nmnist", "test", root=env)


def test_nmnist_file_cut_at_an_event_boundary_is_detected(env):
    """No header, so a cut at a multiple of 5 bytes decodes; the recording's end gives it away."""
    t = np.linspace(0, 300_000, 400).astype(np.int64)
    whole = encode_events(np.arange(400) % 34, np.arange(400) % 7, np.arange(400) % 2, t)
    d = env / "nmnist" / "Test" / "4"
    d.mkdir(parents=True)
    (d / "00001.bin").write_bytes(whole)
    assert len(load_dataset("nmnist", "test", root=env, n_frames=2)) == 1
    (d / "00001.bin").write_bytes(whole[: 5 * 200])  # half the events, at an event boundary
    with pytest.raises(DatasetCorruptError, match="truncated") as ei:
        load_dataset("nmnist", "test", root=env, n_frames=2)
    assert "00001.bin" in str(ei.value) and "verify=False" in str(ei.value)
    assert len(load_dataset("nmnist", "test", root=env, n_frames=2, verify=False)) == 1
    (d / "00001.bin").write_bytes(whole[5:] + whole[:5])  # events out of order
    with pytest.raises(DatasetCorruptError, match="backwards"):
        load_dataset("nmnist", "test", root=env, n_frames=2)


def test_nonexistent_root_is_an_error_not_a_fallback(env, monkeypatch):
    write_idx(env / "mnist", "test", *tiny_mnist(), gz=True)
    monkeypatch.setenv("SNNLEARN_DATA", str(env))  # the data would be found here...
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset("mnist", "test", root=env / "typo", verify=False)  # ...but the explicit root is wrong


# --------------------------------------------------------------------------- image folders / CIFAR-10


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_read_image_folder_two_classes(tmp_path):
    rng = np.random.default_rng(0)
    expected = {}
    for c, n in (("cats", 3), ("dogs", 2)):
        (tmp_path / c).mkdir()
        for i in range(n):
            a = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
            (tmp_path / c / f"{i:02d}.png").write_bytes(_png(a))
            expected[(c, i)] = a
    x, y, classes = cifar_mod.read_image_folder(tmp_path)
    assert classes == ["cats", "dogs"] and x.shape == (5, 3, 5, 6) and x.dtype == np.uint8
    assert y.tolist() == [0, 0, 0, 1, 1]
    assert np.array_equal(x[3].transpose(1, 2, 0), expected[("dogs", 0)])  # lossless PNG, CHW
    xg, _, _ = cifar_mod.read_image_folder(tmp_path, mode="L")
    assert xg.shape == (5, 1, 5, 6)
    with pytest.raises(DatasetCorruptError, match="expected 32x32"):
        cifar_mod.read_image_folder(tmp_path, size=(32, 32))
    (tmp_path / "dogs" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetCorruptError, match="broken.jpg"):
        cifar_mod.read_image_folder(tmp_path)


def make_cifar_folder(base: Path, split: str, per_class: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k, c in enumerate(cifar_mod.CLASSES):
        d = base / split / c
        d.mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            (d / f"{i:04d}.png").write_bytes(_png(a))
            xs.append(a.transpose(2, 0, 1))
            ys.append(k)
    return np.stack(xs), np.array(ys)


@pytest.mark.parametrize("as_tar", [False, True])
def test_cifar_image_folder_and_cache(env, as_tar, monkeypatch):
    root = env / "data" / "cifar10"
    x, y = make_cifar_folder(root / "cifar10-jpeg", "test")
    if as_tar:
        with tarfile.open(root / "cifar10-jpeg.tar.gz", "w:gz") as tf:
            tf.add(root / "cifar10-jpeg", arcname="cifar10-jpeg")
        import shutil

        shutil.rmtree(root / "cifar10-jpeg")
        # not the bytes of the known archive of that name: its sha256 is checked
        with pytest.raises(DatasetCorruptError, match="sha256.*verify=False"):
            load_dataset("cifar10", "test", root=env / "data")
        assert len(load_dataset("cifar10", "test", root=env / "data", verify=False, cache=False)) == 20
        digest = hashlib.sha256((root / "cifar10-jpeg.tar.gz").read_bytes()).hexdigest()
        monkeypatch.setitem(cifar_mod.JPEG_TAR_SHA256, "cifar10-jpeg.tar.gz", digest)
        monkeypatch.setattr(data_base, "_WARNED", set())
    with pytest.warns(UserWarning, match="lossy"):
        ds = load_dataset("cifar10", "test", root=env / "data")
    assert ds.inputs.shape == (20, 3, 32, 32) and ds.inputs.dtype == torch.uint8
    assert np.array_equal(ds.inputs.numpy(), x) and ds.labels.tolist() == y.tolist()
    assert ds.classes == cifar_mod.CLASSES and ds.meta["lossy"] and not ds.meta["from_cache"]
    assert list((env / "cache" / "cifar10").glob("*.npz"))
    again = load_dataset("cifar10", "test", root=env / "data")
    assert again.meta["from_cache"] and torch.equal(again.inputs, ds.inputs) and torch.equal(again.labels, ds.labels)


def _batch_pickle(x: np.ndarray, y: list[int], numpy1_names: bool = False) -> bytes:
    obj = {b"batch_label": b"testing batch 1 of 1", b"labels": y, b"data": x.reshape(len(y), -1), b"filenames": [b"a.png"] * len(y)}
    raw = pickle.dumps(obj, protocol=2)
    if numpy1_names:  # what the official (numpy 1.x era) files reference
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    return raw


@pytest.mark.parametrize("numpy1_names", [False, True])
def test_cifar_official_batches(env, numpy1_names):
    rng = np.random.default_rng(1)
    bd = env / "c" / "cifar-10-batches-py"
    bd.mkdir(parents=True)
    x = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    y = [3, 1, 4, 1]
    (bd / "test_batch").write_bytes(_batch_pickle(x, y, numpy1_names))
    ds = load_dataset("cifar10", "test", root=env / "c")
    assert np.array_equal(ds.inputs.numpy(), x) and ds.labels.tolist() == y
    assert ds.meta["format"] == "batches" and not ds.meta["lossy"]
    # the same batch inside an official-style archive (not the official bytes, so verify=False)
    tar = env / "t" / "cifar10" / "cifar-10-python.tar.gz"
    tar.parent.mkdir(parents=True)
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(bd / "test_batch", arcname="cifar-10-batches-py/test_batch")
    with pytest.raises(DatasetCorruptError, match="sha256"):
        load_dataset("cifar10", "test", root=env / "t")
    dt = load_dataset("cifar10", "test", root=env / "t", verify=False)
    assert torch.equal(dt.inputs, ds.inputs)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_cifar_refuses_code_in_pickles(env):
    bd = env / "c" / "cifar-10-batches-py"
    bd.mkdir(parents=True)
    marker = env / "pwned"
    (bd / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(str(marker)), b"labels": [0]}, protocol=2))
    with pytest.raises(DatasetCorruptError, match="not allowed") as ei:
        load_dataset("cifar10", "test", root=env / "c")
    assert "test_batch" in str(ei.value)
    assert not marker.exists()
    (bd / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DatasetCorruptError):
        load_dataset("cifar10", "test", root=env / "c")


# --------------------------------------------------------------------------- Caltech (tiny)


def make_caltech(base: Path, n_per_class: int = 9) -> None:
    from PIL import Image

    rng = np.random.default_rng(2)
    for folder, stem in (("Face", "image"), ("Motor", "motor")):
        d = base / "caltech-face-motorbike" / folder
        d.mkdir(parents=True)
        for i in range(n_per_class):
            a = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
            Image.fromarray(a).save(d / f"{stem}_{i + 1:04d}.jpg")


def test_caltech_tiny_split(env):
    make_caltech(env)
    kw = dict(root=env, n_train=4, n_val=2, size=(16, 25))
    parts = {s: load_dataset("caltech", s, seed=3, **kw) for s in ("train", "val", "test")}
    assert [parts[s].class_counts() for s in ("train", "val", "test")] == [[4, 4], [2, 2], [3, 3]]
    assert parts["train"].inputs.shape == (8, 1, 16, 25) and parts["train"].inputs.dtype == torch.uint8
    assert parts["train"].classes == ["face", "motorbike"]
    files = [set(parts[s].meta["files"]) for s in ("train", "val", "test")]
    assert not (files[0] & files[1]) and not (files[0] & files[2]) and not (files[1] & files[2])
    assert len(files[0] | files[1] | files[2]) == 18
    assert all(f.startswith("Face/") for f in parts["val"].meta["files"][:2])
    again = load_dataset("caltech", "train", seed=3, **kw)
    assert again.meta["files"] == parts["train"].meta["files"] and torch.equal(again.inputs, parts["train"].inputs)
    other = load_dataset("caltech", "train", seed=4, **kw)
    assert other.meta["files"] != parts["train"].meta["files"]


# --------------------------------------------------------------------------- the shared offline data

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")


@needs_shared
def test_shared_mnist(offline):
    train = load_dataset("mnist", "train", root=SHARED)
    test = load_dataset("mnist", "test", root=SHARED)
    assert train.inputs.shape == (60000, 1, 28, 28) and train.inputs.dtype == torch.uint8
    assert test.inputs.shape == (10000, 1, 28, 28)
    assert train.class_counts() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert test.class_counts() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(train.inputs.float().mean().item() - 33.318) < 1e-3
    tr, va = split_train_val(train, 5000, seed=0)
    assert len(tr) == 55000 and len(va) == 5000


@needs_shared
def test_shared_mnist_via_env(monkeypatch):
    monkeypatch.setenv("SNNLEARN_OFFLINE", "1")
    monkeypatch.setenv("SNNLEARN_DATA", str(SHARED))
    ds = load_dataset("mnist", "test")
    assert len(ds) == 10000 and ds.meta["source"] == str(SHARED / "mnist")


@needs_shared
def test_shared_caltech(offline):
    parts = {s: load_dataset("caltech", s, root=SHARED) for s in ("train", "val", "test")}
    assert parts["train"].class_counts() == [200, 200]
    assert parts["val"].class_counts() == [50, 50]
    assert parts["test"].class_counts() == [185, 185]
    for ds in parts.values():
        assert ds.inputs.shape[1:] == (1, 160, 250) and ds.inputs.dtype == torch.uint8
        assert ds.classes == ["face", "motorbike"]
    all_files = [f for s in parts for f in parts[s].meta["files"]]
    assert len(all_files) == len(set(all_files)) == 870
    again = load_dataset("caltech", "val", root=SHARED, seed=0)
    assert again.meta["files"] == parts["val"].meta["files"] and torch.equal(again.inputs, parts["val"].inputs)
    other = load_dataset("caltech", "val", root=SHARED, seed=1)
    assert other.meta["files"] != parts["val"].meta["files"]


@needs_shared
def test_shared_nmnist(offline, monkeypatch):
    monkeypatch.setattr(data_base, "_WARNED", set())
    with pytest.warns(UserWarning, match="subset"):
        train = load_dataset("nmnist", "train", root=SHARED)
    test = load_dataset("nmnist", "test", root=SHARED, frame_ms=3.0, n_frames=30)
    assert train.inputs.shape == (1000, 30, 2, 34, 34) and train.inputs.dtype == torch.uint8
    assert test.inputs.shape == (100, 30, 2, 34, 34)
    assert train.class_counts() == [97, 116, 99, 93, 105, 92, 94, 117, 87, 100]
    assert test.class_counts() == [8, 14, 8, 11, 14, 7, 10, 15, 2, 11]
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # MNIST order
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert (train.inputs.flatten(1).sum(1) > 0).all()
    short = load_dataset("nmnist", "test", root=SHARED, n_frames=5)
    assert torch.equal(short.inputs, test.inputs[:, :5])


@needs_shared
def test_shared_cifar10_test(offline, monkeypatch):
    monkeypatch.setattr(data_base, "_WARNED", set())
    with pytest.warns(UserWarning, match="lossy"):
        ds = load_dataset("cifar10", "test", root=SHARED)
    assert ds.inputs.shape == (10000, 3, 32, 32) and ds.inputs.dtype == torch.uint8
    assert ds.class_counts() == [1000] * 10
    assert ds.classes == cifar_mod.CLASSES
    means = ds.inputs.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(means, torch.tensor([0.4942, 0.4851, 0.4504]), atol=0.01)


@pytest.mark.skipif(not FMNIST_SYSTEM.is_dir(), reason="dataset-fashion-mnist not installed")
def test_system_fmnist(offline):
    train = load_dataset("fmnist", "train")
    test = load_dataset("fmnist", "test")
    assert train.inputs.shape == (60000, 1, 28, 28) and test.inputs.shape == (10000, 1, 28, 28)
    assert train.class_counts() == [6000] * 10 and test.class_counts() == [1000] * 10
    assert train.meta["source"] == str(FMNIST_SYSTEM)
    assert len(train.classes) == 10
