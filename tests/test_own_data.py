"""Your own data: the README example (executed verbatim), Trainer.fit on tensors and Datasets,
``folder:`` and ``npz:`` datasets from recipes and the CLI, their fingerprints, and one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import sys

from snnlearn import cli
from snnlearn.data import load_dataset
from snnlearn.errors import UserError
from snnlearn.rules import get_rule
from snnlearn.train import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from toy_data import toy_images  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"
QUIET = dict(device="cpu", progress=False, log=lambda m: None)


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Your own data"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_as_written(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example writes tssl.nir into the working directory
    exec(compile(readme_example(), "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    acc = float(re.search(r"strict test accuracy ([0-9.]+)", out).group(1))
    # three classes: chance is 1/3. The value moves by a test sample or two between CPUs, whose float32
    # kernels round differently (above 0.80 on an AVX2 EPYC, 0.79 on an AVX-512 Xeon)
    assert acc > 0.7, out
    assert (tmp_path / "tssl.nir").stat().st_size > 0


def _npz(path, **override) -> str:
    (xtr, ytr), (xte, yte) = toy_images(60, 0), toy_images(20, 1)
    arrays = dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return str(path)


def _recipe(dataset: str, **extra) -> dict:
    return {"name": "own", "rule": "tssl", "variant": "reference", "dataset": dataset, "arch": "36-16-3",
            "epochs": 1, "batch_size": 10, "val_size": 10, "seed": 0, **extra}


def _rule(**kw):
    return get_rule("tssl")("36-16-3", (1, 6, 6), 3, variant="reference", seed=0, **kw)


# ------------------------------------------------------------------------------------------- fit
def test_fit_on_tensors_equals_the_recipe_path_and_resumes(tmp_path):
    """fit() is the loop the recipe path runs: same data, same rule, same weights."""
    path = _npz(tmp_path / "d.npz")
    s_recipe = Trainer(_recipe(f"npz:{path}", epochs=2, val_size=0), tmp_path / "recipe", **QUIET).run()
    train, test = load_dataset(f"npz:{path}", "train"), load_dataset(f"npz:{path}", "test")
    trainer = Trainer({"epochs": 2, "batch_size": 10}, tmp_path / "fit", **QUIET)
    s_fit = trainer.fit(_rule(), (train.inputs, train.labels), test=(test.inputs, test.labels))
    assert s_fit["test_accuracy"] == s_recipe["test_accuracy"] and s_fit["confusion"] == s_recipe["confusion"]
    from snnlearn.checkpoint import load_checkpoint

    a, _ = load_checkpoint(tmp_path / "recipe" / "checkpoint" / "last")
    b, _ = load_checkpoint(tmp_path / "fit" / "checkpoint" / "last")
    assert all(torch.equal(a[k], b[k]) for k in a if k != "_generator_state")
    info = json.loads((tmp_path / "fit" / "run.json").read_text())
    assert info["data"]["sources"]["train"]["sha256"] and info["config"]["rule"] == "tssl"

    # resume: one more epoch continues; other data is refused
    more = Trainer({"epochs": 3, "batch_size": 10}, tmp_path / "fit", **QUIET)
    with pytest.raises(UserError, match="already holds a run"):
        more.fit(_rule(), (train.inputs, train.labels), test=(test.inputs, test.labels))
    s3 = more.fit(_rule(), (train.inputs, train.labels), test=(test.inputs, test.labels), resume=True)
    assert s3["epochs"] == 3
    flipped = train.labels.clone()
    flipped[0] = (flipped[0] + 1) % 3
    with pytest.raises(UserError, match="sha256"):
        Trainer({"epochs": 4, "batch_size": 10}, tmp_path / "fit", **QUIET).fit(
            _rule(), (train.inputs, flipped), test=(test.inputs, test.labels), resume=True)


def test_fit_takes_any_dataset_in_memory_without_a_run_directory():
    x, y = toy_images(30, 2)

    class Pairs(Dataset):
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return x[i], int(y[i])  # numpy input, int label

    summary = Trainer({"epochs": 1, "batch_size": 5}, **QUIET).fit(_rule(), Pairs(), val=Pairs())
    assert summary["test_accuracy"] is None and summary["n_train"] == 30 and summary["best_val_accuracy"] is not None


@pytest.mark.parametrize("data, message", [
    ((torch.zeros(4, 36, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)), r"inputs have shape \(4, 36\); the rule takes samples of shape \(1, 6, 6\)"),
    ((torch.zeros(4, 1, 6, 6), torch.zeros(4)), r"labels are torch.float32"),
    ((torch.zeros(4, 1, 6, 6), torch.tensor([0, 1, 7, 2])), r"label 7 \(sample 2\) is not a class index 0..2"),
    ((torch.zeros(4, 1, 6, 6), torch.tensor([0, -1, 1, 2])), r"label -1 \(sample 1\)"),
    ((torch.zeros(4, 1, 6, 6), torch.zeros(3, dtype=torch.long)), r"4 inputs but 3 labels"),
    ((torch.full((2, 1, 6, 6), float("nan")), torch.zeros(2, dtype=torch.long)), r"input 0 holds NaN"),
    ((torch.zeros(2, 1, 6, 6, dtype=torch.complex64), torch.zeros(2, dtype=torch.long)), r"inputs are torch.complex64"),
    ("not data", r"expected a torch Dataset or a pair"),
])
def test_fit_rejects_bad_data_in_one_line(data, message):
    with pytest.raises(UserError, match=message) as e:
        Trainer({"epochs": 1}, **QUIET).fit(_rule(), data)
    assert "\n" not in str(e.value)


def test_fit_checks_its_settings_against_the_rule():
    with pytest.raises(UserError, match="unknown Trainer setting"):
        Trainer({"epochs": 1, "lr": 0.1})
    with pytest.raises(UserError, match="arch"):
        Trainer({"epochs": 1, "arch": "36-8-3"}, **QUIET).fit(_rule(), toy_images(4, 0))


# ------------------------------------------------------------------------------------------- npz
def test_npz_dataset_trains_from_the_cli_and_is_fingerprinted(tmp_path, capsys):
    path = _npz(tmp_path / "d.npz")
    out = tmp_path / "run"
    assert cli.main(["train", "tssl-fmnist-mlp", "--set", f"dataset=npz:{path}", "--set", "arch=36-16-3",
                     "--set", "val_size=10", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["data"]["dataset"] == f"npz:{path}" and info["data"]["input_shape"] == [1, 6, 6]
    assert info["data"]["sources"]["train"]["format"] == "npz" and len(info["data"]["sources"]["test"]["sha256"]) == 64
    assert info["data"]["n_train"] == 50 and info["data"]["n_test"] == 20
    # the same file with other content: --resume refuses it
    _npz(tmp_path / "d.npz", y_test=np.zeros(20, dtype=np.int64))
    assert cli.main(["train", "tssl-fmnist-mlp", "--set", f"dataset=npz:{path}", "--set", "arch=36-16-3",
                     "--set", "val_size=10", "--epochs", "2", "--out", str(out), "--resume", "--no-progress"]) == 2
    assert "sources.test.sha256" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    (dict(y_test=None), r"lacks array\(s\) \['y_test'\]"),
    (dict(x_train=np.zeros((60, 1, 6, 6), np.float32)), r"x_train is float32; .*astype\(np.uint8\)"),
    (dict(y_train=np.full(60, 0.0)), r"y_train is float64"),
    (dict(y_test=np.r_[np.zeros(19, np.int64), -3]), r"y_test\[19\] = -3 is not a class index"),
    (dict(y_train=np.zeros(59, np.int64)), r"x_train has 60 samples but y_train has 59 labels"),
    (dict(x_test=np.zeros((20, 1, 5, 6), np.uint8)), r"test samples have shape \(1, 5, 6\), training samples \(1, 6, 6\)"),
    (dict(x_train=np.full((60, 1, 6, 6), 300, np.int32)), r"x_train holds the value 300"),
])
def test_npz_errors_are_one_line_naming_the_bad_value(tmp_path, capsys, override, message):
    path = _npz(tmp_path / "d.npz", **override)
    code = cli.main(["train", "tssl-fmnist-mlp", "--set", f"dataset=npz:{path}", "--set", "arch=36-16-3",
                     "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err), err
    assert err.count("\n") == 1


def test_npz_missing_file_and_unknown_option(tmp_path, capsys):
    assert cli.main(["train", "tssl-fmnist-mlp", "--set", f"dataset=npz:{tmp_path / 'no.npz'}", "--out",
                     str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    path = _npz(tmp_path / "d.npz")
    assert cli.main(["train", "tssl-fmnist-mlp", "--set", f"dataset=npz:{path}", "--set", "dataset_options.size=3",
                     "--out", str(tmp_path / "r")]) == 2
    assert "unknown dataset option(s) ['size'] for npz: datasets" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- folder
def _folder(root: Path, sizes=((6, 6),), split_dirs=True, rgb=False) -> Path:
    from PIL import Image

    parts = {"train": toy_images(30, 0, (3, 8, 8)), "test": toy_images(12, 1, (3, 8, 8))} if split_dirs else {"": toy_images(40, 0, (3, 8, 8))}
    names = ["cat", "dog", "eel"]
    for part, (x, y) in parts.items():
        for i, (img, label) in enumerate(zip(x, y)):
            d = root / part / names[label]
            d.mkdir(parents=True, exist_ok=True)
            h, w = sizes[i % len(sizes)]
            arr = np.ascontiguousarray(img.transpose(1, 2, 0)[:h, :w])
            Image.fromarray(arr if rgb else arr[..., 0]).save(d / f"{i}.png")
    return root


def test_folder_dataset_gray_rgb_resize_and_held_out_split(tmp_path):
    root = _folder(tmp_path / "imgs")
    train = load_dataset(f"folder:{root}", "train")
    test = load_dataset(f"folder:{root}", "test")
    assert train.inputs.shape == (30, 1, 6, 6) and train.inputs.dtype == torch.uint8 and test.inputs.shape == (12, 1, 6, 6)
    assert train.classes == ["cat", "dog", "eel"] and train.meta["format"] == "image folder"
    rgb = load_dataset(f"folder:{_folder(tmp_path / 'rgb', rgb=True)}", "train", color="rgb", size=[4, 5])
    assert rgb.inputs.shape == (30, 3, 4, 5)
    flat = _folder(tmp_path / "flat", split_dirs=False)
    tr, te = (load_dataset(f"folder:{flat}", s, test_size=10) for s in ("train", "test"))
    assert len(tr) == 30 and len(te) == 10 and tr.meta["sha256"] != te.meta["sha256"]
    summary = Trainer(_recipe(f"folder:{root}"), tmp_path / "run", **QUIET).run()
    assert summary["n_test"] == 12 and summary["data"]["sources"]["train"]["format"] == "image folder"


def test_folder_errors_are_one_line(tmp_path, capsys):
    mixed = _folder(tmp_path / "mixed", sizes=((6, 6), (5, 6)))
    with pytest.raises(ValueError, match=r"image .*png is 6x5 \(WxH\) but .*png is 6x6; set dataset_options.size"):
        load_dataset(f"folder:{mixed}", "train")
    flat = _folder(tmp_path / "flat", split_dirs=False)
    with pytest.raises(ValueError, match="no train/ and test/ sub-folders: set dataset_options.test_size"):
        load_dataset(f"folder:{flat}", "train")
    with pytest.raises(ValueError, match="color='blue' must be 'gray' or 'rgb'"):
        load_dataset(f"folder:{flat}", "train", color="blue", test_size=5)
    (tmp_path / "empty").mkdir()
    assert cli.main(["train", "tssl-fmnist-mlp", "--set", f"dataset=folder:{tmp_path / 'empty'}", "--set",
                     "dataset_options.test_size=3", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "has no class sub-folders with images" in err and err.count("\n") == 1
