"""``layer-readout``: how much class information each layer's first-spike times still carry, for
the single-spike rules (S4NN, BS4NN, STiDi-BP: every rule whose network gives per-layer spike
times, ``rule.forward_times``). Not a figure of the papers; a diagnosis of where a network loses
what its input holds (docs/rules/stidi.md used it to find the F-MNIST operating point).

The score of a layer is the accuracy of a linear read-out (multinomial logistic regression on the
standardised times, L2 weight 1e-3, L-BFGS from zero) fitted on the first ``fit`` training images
(default 5,000) and scored on ``split`` (default ``val``, ``limit`` images, default 1,000: the
selection never sees the test set), beside the share of the layer's neurons that fire.
``untrained=1`` (the same as ``which=initial``) rebuilds the run's network with its seed's initial
weights: the operating point before learning. Layers wider than ``max_features`` (default 5,000) neurons are listed but
not fitted (cost). Other options: ``which`` (``best`` | ``last`` | ``initial``), ``batch_size``, ``device``,
``data_dir``. Writes ``layer_readout.png`` and ``layer_readout.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .common import SPLIT, TRAINED, analysis_split, load_splits, load_trained, option, pyplot, save_figure, write_csv


def _layer_times(rule, inputs: torch.Tensor, bs: int) -> list[torch.Tensor]:
    """Every layer's first-spike times (input first), flattened to (N, neurons), float32."""
    parts: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for lo in range(0, len(inputs), bs):
            times = rule.forward_times(rule.encode(inputs[lo:lo + bs].to(rule.device)))
            parts.append([t.reshape(t.shape[0], -1).float().cpu() for t in times])
    return [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]


def linear_readout(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   n_classes: int, l2: float = 1e-3, max_iter: int = 200) -> float:
    """Accuracy on ``test`` of a multinomial logistic regression fitted on ``train`` (features
    standardised with the training statistics). Deterministic: zero start, L-BFGS."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-3  # a silent neuron (constant t_max) has sd 0
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    w = torch.zeros(a.shape[1], n_classes, requires_grad=True)
    c = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, c], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(a @ w + c, train_y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return ((b @ w + c).argmax(1) == test_y).float().mean().item()


def layer_readout(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    untrained = bool(int(option(options, "untrained", 0)))
    if untrained:  # the run's network as it was built, before learning
        options = {**options, "which": "initial"}
    config, rule = load_trained(run_dir, options, "layer-readout", "single-spike (s4nn, bs4nn, stidi)",
                                "stidi-mnist-rcsnn")
    if not hasattr(rule, "forward_times"):
        raise ValueError(f"layer-readout: {run_dir} is a {config.get('rule')!r} run, whose network gives no spike "
                         f"time per layer (single-spike rules only: s4nn, bs4nn, stidi)")
    n_fit, bs = int(option(options, "fit", 5000)), int(option(options, "batch_size", 500))
    max_features = int(option(options, "max_features", 5000))
    # one load of the data: the fit images from the training split, the scored ones from `split`
    score_options = {"split": "val", "limit": 1000, **options}
    splits = load_splits(config, score_options)
    score = analysis_split(config, score_options, splits)
    fit = splits[0].subset(torch.arange(min(n_fit, len(splits[0]))))
    f_fit, f_score = _layer_times(rule, fit.inputs, bs), _layer_times(rule, score.inputs, bs)
    tokens = str(config.get("arch", "")).split("-")
    if len(tokens) == len(f_fit) - 1:  # the arch string does not name the input
        tokens = ["input", *tokens]
    names = [f"{i}:{t}" for i, t in enumerate(tokens)] if len(tokens) == len(f_fit) else [str(i) for i in range(len(f_fit))]
    rows = []
    for name, a, b in zip(names, f_fit, f_score):
        firing = (b < rule.t_max).float().mean().item()
        acc = linear_readout(a, fit.labels, b, score.labels, rule.n_classes) if a.shape[1] <= max_features else None
        rows.append([name, a.shape[1], round(firing, 4), None if acc is None else round(acc, 4)])
    csv = write_csv(out_dir / "layer_readout.csv", ["layer", "neurons", "firing_share", "readout_accuracy"], rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.5 + 0.9 * len(rows), 3.6))
    xs = list(range(len(rows)))
    ax.bar(xs, [0.0 if r[3] is None else 100 * r[3] for r in rows], color="tab:blue", label="linear read-out accuracy")
    ax.plot(xs, [100 * r[2] for r in rows], "o--", color="tab:orange", label="neurons firing")
    for x, r in zip(xs, rows):
        ax.text(x, 2, "not fitted" if r[3] is None else f"{100 * r[3]:.1f}", ha="center", rotation=90 if r[3] is None else 0,
                fontsize=8, color="white" if r[3] is not None else "black")
    ax.set_xticks(xs, [f"{r[0]}\n({r[1]})" for r in rows], fontsize=8)
    ax.set_ylim(0, 115)
    ax.set_ylabel("%")
    what = "untrained (fresh init)" if untrained else f"trained ({options.get('which', 'best')})"
    ax.set_title(f"{config.get('name', '')}, {what}: fit {len(fit)} train, score {len(score)} {options.get('split', 'val')}",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    return [save_figure(plt, fig, out_dir / "layer_readout.png"), csv]


ANALYSES = {"layer-readout": layer_readout}
OPTIONS = {"layer-readout": (*TRAINED, *SPLIT, "untrained", "fit", "batch_size", "max_features")}
