"""The ``maxnorm`` conversion against SpikingJelly 2.0's converter, ``ann2snn.Converter(recipe=
RateCodingRecipe(loader, mode="Max"))`` (Diehl et al. 2015 / Rueckauer et al. 2017 data-based
normalisation; a test-only peer, skipped when SpikingJelly is not installed).

Where the two are the same method they must agree:

* the per-layer scale λ_l: an exponential average (momentum 0.1, the first batch initialises) of
  each hidden ReLU's batch maximum over the same calibration batches — bit for bit when
  SpikingJelly keeps BatchNorm as a module (``fuse_flag=False``), to rounding when it folds
  BatchNorm into the convolution (its default);
* the converted network: SpikingJelly writes layer l as ``×1/λ_l → IF(θ = 1, reset by
  subtraction) → ×λ_l``, snnlearn as IF(θ = λ_l, reset by subtraction) emitting spikes of
  amplitude λ_l — equal in exact arithmetic, so in float64 the two give the same spikes in every
  layer and output sums equal to rounding. Both keep max pooling on the λ-amplitude spikes and
  read out the last layer's summed input current.

Differences by design (documented in docs/rules/proxy.md, not tested): ``norm: p99.9`` takes the
nearest-rank 99.9th percentile (``kthvalue``), SpikingJelly's ``"99.9%"`` interpolates
(``torch.quantile``); snnlearn computes the first layer's current once per image (the same value
SpikingJelly recomputes at every step) and calibrates at the end of every epoch on that epoch's
first ``calib_samples`` training images.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

sj_ann2snn = pytest.importorskip("spikingjelly.activation_based.ann2snn")
from spikingjelly.activation_based import functional, neuron  # noqa: E402

from snnlearn.rules import get_rule  # noqa: E402

F64 = torch.float64
ARCH = "6C3p1-6C3p1-P2-8C3p1-P2-24-10"
SHAPE = (1, 12, 12)


def trained_maxnorm_rule():
    """A maxnorm conversion rule after a few CANN steps (BatchNorm running statistics learned)."""
    torch.manual_seed(0)
    r = get_rule("conversion")(ARCH, SHAPE, 10, variant="maxnorm", seed=1, T=40, eval_T=[], calib_batch=8)
    r.net.config.channels_last = False
    r.net.double()
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(32, *SHAPE, generator=g, dtype=F64), torch.randint(0, 10, (32,), generator=g)
    r.start_epoch(0, 1)
    for lo in range(0, 32, 8):
        r.learn(x[lo : lo + 8], y[lo : lo + 8])
    return r, x


def as_torch_ann(net) -> nn.Sequential:
    """The CANN of a snnlearn Network as plain torch modules (ReLU, MaxPool2d, BatchNorm2d with
    the CANN's running statistics) — what a SpikingJelly user would hand to the converter."""
    mods: list[nn.Module] = []
    for m in net.layers:
        if hasattr(m, "spike"):  # Pool
            mods.append(nn.MaxPool2d(m.kernel))
            continue
        if m.flatten:
            mods.append(nn.Flatten())
        mods.append(m.op)
        if m.bn is not None:
            bn = nn.BatchNorm2d(m.bn.channels, eps=m.bn.eps, momentum=m.bn.momentum).to(F64)
            with torch.no_grad():
                bn.weight.copy_(m.bn.weight)
                bn.bias.copy_(m.bn.bias)
                bn.running_mean.copy_(m.bn.running_mean_ann)
                bn.running_var.copy_(m.bn.running_var_ann)
            mods.append(bn)
        if not m.last:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).eval()


def sj_convert(r, x, fuse: bool):
    import copy

    ann = copy.deepcopy(as_torch_ann(r.net))
    loader = [x[lo : lo + 8] for lo in range(0, len(x), 8)]
    recipe = sj_ann2snn.RateCodingRecipe(loader, mode="Max", momentum=0.1, fuse_flag=fuse)
    # SpikingJelly stores λ and 1/λ as torch.tensor(λ), in the default dtype: float64 here, so
    # that the comparison is not limited by a float32 rounding of the scales
    before = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        return sj_ann2snn.Converter(recipe=recipe).convert(ann)
    finally:
        torch.set_default_dtype(before)


def sj_scales(snn) -> list[float]:
    """λ_l of SpikingJelly's converted network, in layer order (the ×λ scaler after each IF)."""
    return [float(m.scale) for name, m in snn.named_modules() if name.endswith("scaler1")]


@pytest.mark.parametrize("fuse", [False, True])
def test_maxnorm_scales_equal_spikingjelly(fuse):
    r, x = trained_maxnorm_rule()
    lam = r.calibrate(x)
    ours = [lam[m.name] for m in r.net.weighted[:-1]]
    theirs = sj_scales(sj_convert(r, x, fuse))
    assert len(theirs) == len(ours) == 4
    if fuse:  # BatchNorm folded into the convolution: the same maxima up to rounding
        torch.testing.assert_close(torch.tensor(theirs), torch.tensor(ours), rtol=1e-12, atol=0)
    else:
        assert theirs == ours


def test_maxnorm_snn_equals_spikingjelly_spike_for_spike():
    r, x = trained_maxnorm_rule()
    r.calibrate(x)
    snn = sj_convert(r, x, fuse=False)
    ifs = [m for m in snn.modules() if isinstance(m, neuron.IFNode)]
    assert len(ifs) == 4 and all(m.v_reset is None for m in ifs)  # reset by subtraction
    sj_spikes = [torch.zeros(len(x), dtype=F64) for _ in ifs]

    def count(k):
        def hook(mod, inp, out):
            sj_spikes[k].add_(out.flatten(1).sum(1))  # returns None: the output is unchanged
        return hook

    hooks = [m.register_forward_hook(count(k)) for k, m in enumerate(ifs)]
    T = 40
    functional.reset_net(snn)
    with torch.no_grad():
        sj_out = sum(snn(x) for _ in range(T))  # single-step mode, the image at every step
        ours = r.net.eval().snn(x, T, stats=True)
    for h in hooks:
        h.remove()
    names = [m.name for m in r.net.weighted[:-1]]
    for k, name in enumerate(names):
        assert sj_spikes[k].sum() > 0, f"{name} is silent: the test would not compare spikes"
        assert torch.equal(ours.spikes[name], sj_spikes[k]), name
    torch.testing.assert_close(ours.counts, sj_out, rtol=1e-10, atol=1e-10)
    assert torch.equal(ours.counts.argmax(1), sj_out.argmax(1))
