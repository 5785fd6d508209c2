"""Issue 13, must-show 4: ``snnlearn report --mean`` regenerates a multi-seed row of
``docs/results.md`` from the per-seed run directories alone: the same row that the ``--seeds``
run wrote, with mean ± sample std of each seed's own summary."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from snnlearn import cli  # noqa: E402
from test_platform import toy  # noqa: E402,F401  (the synthetic prototype-rule recipe fixture)

# columns of the report row: recipe, variant, epochs, strict, ref.-compatible, ties, silent,
# best val (epochs), test at best val, ref.-compatible at best val, train samples/s, wall, paper
TIMING = (10, 11)  # samples/s and wall: the --seeds run is timed as a whole, not per seed


def _row(capsys, args: list[str]) -> list[str]:
    capsys.readouterr()
    assert cli.main(["report", *args]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_mean_regenerates_the_multi_seed_row(toy, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "multi"
    assert cli.main(["train", str(toy), "--out", str(out), "--seeds", "0,1,2", "--epochs", "2", "--device", "cpu"]) == 0
    seeds = [out / f"seed{s}" for s in (0, 1, 2)]
    whole = _row(capsys, [str(out)])
    mean = _row(capsys, ["--mean", *map(str, seeds)])
    assert len(whole) == len(mean) == 13
    assert [c for i, c in enumerate(mean) if i not in TIMING] == [c for i, c in enumerate(whole) if i not in TIMING]
    # and the numbers are the mean ± sample std of the seeds' own summaries
    per_seed = [json.loads((d / "summary.json").read_text()) for d in seeds]
    for col, key in ((3, "test_accuracy"), (5, "tie_rate")):
        vals = [100 * s[key] for s in per_seed]
        assert mean[col] == f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"
    assert "seeds 0,1,2" in mean[2]
    at_best = [100 * s["test_at_best_val"]["accuracy"] for s in per_seed]
    assert mean[8] == f"{statistics.mean(at_best):.2f} ± {statistics.stdev(at_best):.2f}"
    ref_at_best = [100 * s["test_at_best_val"]["accuracy_reference"] for s in per_seed]
    assert mean[9] == f"{statistics.mean(ref_at_best):.2f} ± {statistics.stdev(ref_at_best):.2f}"
    assert _row(capsys, [str(seeds[1])])[9] == f"{ref_at_best[1]:.2f}"
    # the directory of the --seeds run is already a mean: --mean on it says so
    assert cli.main(["report", "--mean", str(out), str(seeds[0])]) == 2
    assert "already holds the mean of seeds [0, 1, 2]" in capsys.readouterr().err
    # the order of the run directories does not change the row
    assert _row(capsys, ["--mean", *map(str, reversed(seeds))])[3] == mean[3]
