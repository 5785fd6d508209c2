"""Issue 13, must-show 4, on a fresh clone: every ``snnlearn report`` command in
``docs/results.md`` that reads the committed run records (``docs/runs/``) runs, and prints the
numbers the page quotes. The records are what finished runs wrote, less their checkpoints."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from snnlearn import cli
from snnlearn.records import machine_paths

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "docs" / "runs"
RESULTS = ROOT / "docs" / "results.md"
# a report command, inline in backticks or on a line of a code block, reading docs/runs/
COMMAND = re.compile(r"snnlearn report [^`\n#]*docs/runs/[^`\n#]*")
# report row cells: 3 strict final, 8 strict test at best val
STRICT_FINAL, STRICT_AT_BEST = 3, 8


def _commands() -> list[str]:
    return sorted({m.group(0).strip() for m in COMMAND.finditer(RESULTS.read_text(encoding="utf-8"))})


def _record_dirs() -> list[Path]:
    return sorted(p.parent for p in RECORDS.rglob("summary.json"))


def test_the_results_page_cites_records():
    assert _commands(), "docs/results.md quotes no `snnlearn report ... docs/runs/...` command"
    assert _record_dirs(), "docs/runs holds no run record"


@pytest.mark.parametrize("command", _commands())
def test_each_cited_report_prints_the_quoted_row(command, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = shlex.split(command)[1:]
    capsys.readouterr()
    assert cli.main(argv) == 0, capsys.readouterr().err
    row = capsys.readouterr().out.strip().splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    page = RESULTS.read_text(encoding="utf-8")
    for col in (STRICT_FINAL, STRICT_AT_BEST):
        assert cells[col] in page, f"{command}: {cells[col]!r} (column {col}) is not on docs/results.md"


@pytest.mark.parametrize("record", _record_dirs(), ids=lambda p: str(p.relative_to(RECORDS)))
def test_records_are_whole_and_carry_no_checkpoint_or_machine_path(record):
    summary = json.loads((record / "summary.json").read_text())
    assert summary.get("completed") is True, f"{record}: an unfinished run is not a record"
    assert not (record / "checkpoint").exists() and not (record / ".lock").exists()
    if summary.get("seeds") is None:  # a seed run (not the aggregate of a --seeds run)
        assert {"config.yaml", "run.json", "metrics.jsonl"} <= {p.name for p in record.iterdir()}
        epochs = [json.loads(line)["epoch"] for line in (record / "metrics.jsonl").read_text().splitlines()]
        assert epochs == list(range(1, summary["epochs"] + 1))
    # the data sources are written relative to $SNNLEARN_DATA (docs/runs/README.md), not as the
    # training machine's absolute paths
    assert machine_paths(record) == [], f"{record}: data sources named by a machine path"
