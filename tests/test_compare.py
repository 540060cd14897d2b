"""python -m analysis results/A results/B: several studies in one report (analysis/comparison.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import comparison
from analysis.__main__ import main
from analysis.load import load
from analysis.tables import config_table
from test_analysis import CHROMIUM, chromium, trial, write_study


def two_studies(root: Path) -> tuple[Path, Path]:
    """The same lr grid run twice ('before' and 'after' a change): lr=0.1 is better after it."""
    before = {0.1: [0.90, 0.91, 0.92], 0.01: [0.85, 0.86, 0.87]}
    after = {0.1: [0.95, 0.96, 0.97], 0.01: [0.85, 0.86, 0.88]}
    folders = []
    for name, accs in (("before", before), ("after", after)):
        trials = [trial(f"t{i}{s}", {"lr": lr}, s, acc, epochs=3) for i, (lr, a) in enumerate(accs.items())
                  for s, acc in enumerate(a)]
        folders.append(write_study(root / name, trials, varied=["lr"]))
    return folders[0], folders[1]


def test_two_studies_in_one_table_with_the_report_s_own_tests(tmp_path):
    a, b = two_studies(tmp_path)
    record = b / "report" / "study.json"
    meta = json.loads(record.read_text())
    meta["hardware"]["cpus"], meta["versions"]["torch"] = 16, "2.9.0"
    record.write_text(json.dumps(meta))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}

    assert main([str(a), str(b)]) == 0
    out = tmp_path / "compare-before-after"
    assert {p: p.stat().st_mtime_ns for p in before} == before  # the studies' own files untouched

    data = comparison.combine([load(a), load(b)], out)
    table = config_table(data)
    assert list(table[["study", "lr"]].itertuples(index=False, name=None))[:2] == [("after", 0.1), ("before", 0.1)]
    assert sorted(table["n"]) == [3, 3, 3, 3]
    # The same configuration in two studies, by Games-Howell over the 4 configurations: its formula.
    best, other = [0.95, 0.96, 0.97], [0.90, 0.91, 0.92]
    va, vb = np.var(best, ddof=1) / 3, np.var(other, ddof=1) / 3
    q = (np.mean(best) - np.mean(other)) / math.sqrt((va + vb) / 2)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert table["p_value"][1] == pytest.approx(sps.studentized_range.sf(q, 4, df), rel=1e-6)

    text = (out / "report.md").read_text()
    assert text.startswith("# Comparison: before vs after")
    assert "## Studies compared" in text and "CPUs: before 2, after 16" in text and "torch: before unknown" in text
    assert "No trial timeline in a comparison" in text
    assert "studies" in pd.read_excel(out / "tables.xlsx", sheet_name=None)
    assert (out / "figures" / "learning_curves.png").exists()


def test_refusals(tmp_path, capsys):
    a, b = two_studies(tmp_path)
    assert main([str(a), str(b), "--out", str(a / "report" / "x")]) == 2
    assert "never writes into a study's own report" in capsys.readouterr().err
    record = b / "report" / "study.json"
    record.write_text(json.dumps({**json.loads(record.read_text()),
                                  "study": {**json.loads(record.read_text())["study"], "metric": "val_loss",
                                            "mode": "min"}}))
    assert main([str(a), str(b)]) == 2
    assert "different metrics (before: val_acc (max), after: val_loss (min))" in capsys.readouterr().err
    assert not (tmp_path / "compare-before-after").exists()
    with pytest.raises(SystemExit):
        main([str(a), "--out", str(tmp_path / "x")])


def test_studies_of_one_name_get_their_folder(tmp_path):
    a = two_studies(tmp_path / "machine1")[0]
    b = two_studies(tmp_path / "machine2")[0]
    assert comparison.labels([load(a), load(b)]) == ["before (machine1)", "before (machine2)"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_the_comparison_renders_in_chromium(tmp_path):
    a, b = two_studies(tmp_path)
    assert main([str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    dom = chromium(["--dump-dom", (tmp_path / "cmp" / "report.html").as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr
    assert "Studies compared" in dom.stdout and dom.stdout.count("<table") >= 4
