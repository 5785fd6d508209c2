"""Every trained network is a torch.nn.Module whose outputs equal rule.predict (issue 11 §1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from datasets_available import mnist_available

pytestmark = pytest.mark.skipif(not mnist_available(), reason="MNIST is not available offline (set SNNLEARN_DATA)")

from export_cases import CASES, IDS, eval_images, trained  # noqa: E402
from snnlearn.export import load_model, model_of, save_tensors  # noqa: E402


def module_scores(rule, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The rule's decision scores computed from the module alone."""
    name = rule.name
    if name in ("s4nn", "bs4nn", "stidi"):
        return -model(x).to(torch.float32)
    if name == "desire":
        return model(x).float()
    xe = rule.encode(x)
    model.eval()
    with torch.no_grad():
        if name == "tssl":
            psc, spikes, _ = model(xe)
            return (spikes.sum(0) if rule.hparams["readout"] == "count" else psc.sum(0)).float()
        if name == "ann":
            return model(xe).float()
        return model.snn(xe, int(rule.hparams["T"])).counts.float()


@pytest.mark.parametrize("case", IDS)
def test_module_equals_predict(case):
    rule = trained(case)
    x, _ = eval_images()
    d = rule.predict(x)
    model = model_of(rule)
    assert isinstance(model, nn.Module)
    got = module_scores(rule, model, x)
    assert torch.equal(got, d.scores), case
    # not vacuous: the networks spike (or, for the CNN, give distinct logits)
    assert (~d.silent).sum() > len(x) // 2 or case == "conversion-ding2021"


@pytest.mark.parametrize("case", ["s4nn-paper", "s4nn-reference", "bs4nn", "stidi-r", "stidi-b", "desire-paper",
                                  "desire-reference"])
def test_hand_written_modules_layout(case):
    """PyTorch names and the (out, in) layout; every layer's spikes equal the rule's."""
    rule = trained(case)
    model = rule.to_module()
    sd = model.state_dict()
    if rule.name == "stidi":
        assert tuple(sd["layers.0.weight"].shape) == (4, 1, 5, 5)
        assert tuple(sd["layers.1.weight"].shape) == (20, 4 * 12 * 12)
    else:
        sizes = rule.sizes
        for l in range(len(sizes) - 1):
            assert tuple(sd[f"layers.{l}.weight"].shape) == (sizes[l + 1], sizes[l])
    x, _ = eval_images()
    if rule.name == "desire":
        counts = rule.spike_counts(x)
        mine = [s.sum(0).float() for s in model.spikes(x)]
        for a, b in zip(mine, counts):
            assert torch.equal(a, b)
    else:
        for a, b in zip(model.times(x), rule.forward_times(x)):
            assert torch.equal(a, b)


def test_s4nn_module_matches_both_backends():
    """The module (torch path) equals the rule's numba and torch predictions."""
    from snnlearn.rules.s4nn import S4NN

    rule = trained("s4nn-reference")
    x, _ = eval_images()
    twin = S4NN(rule.arch, rule.input_shape, 10, variant="reference", backend="torch", threshold=10.0)
    twin.load_state_tensors(rule.state_tensors())
    assert torch.equal(twin.predict(x).scores, rule.predict(x).scores)
    assert torch.equal(-rule.to_module()(x).float(), twin.predict(x).scores)


def test_save_tensors_roundtrip(tmp_path):
    rule = trained("desire-reference")
    for fmt in ("safetensors", "pt"):
        path = save_tensors(rule, tmp_path / f"m.{fmt}")
        if fmt == "safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, weights_only=True)["state_dict"]
        for k, v in rule.to_module().state_dict().items():
            assert torch.equal(sd[k], v), (fmt, k)
    with pytest.raises(ValueError, match="unknown tensor format"):
        save_tensors(rule, tmp_path / "m.npz")


def test_load_model_from_run_dir(tmp_path):
    """snnlearn.load_model(RUN_DIR) returns the module of the best checkpoint, on the device."""
    import snnlearn
    from snnlearn import train

    cfg = train.load_recipe("s4nn-mnist", ["epochs=1", "val_size=10", "threshold=10.0"])
    train.run_recipe(cfg, tmp_path / "run", limit_train=30, limit_test=10)
    model = snnlearn.load_model(tmp_path / "run", which="best", device="cpu")
    _, rule = train.load_run(tmp_path / "run", which="best", device="cpu")
    x, _ = eval_images()
    assert not model.training
    assert torch.equal(-model(x).float(), rule.predict(x).scores)
