"""The analysis on synthetic report files with known numbers (docs/report-format.md).

Expected statistics are computed here from the literal lists, with `statistics`
and scipy, never with the analysis' own code.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats as sps

from analysis import AnalysisError, analyse
from analysis.__main__ import main
from analysis.load import load
from analysis.tables import config_table, factor_tables, importance_table, rung_table

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "epoch_time_s",
           "samples_per_s", "lr")
CHROMIUM = Path("/usr/bin/chromium")


# ---------------------------------------------------------------- writing a synthetic study

def epoch_row(best: float, epochs: int, e: int) -> dict:
    """A plausible epoch whose val_acc rises to exactly `best` at the last epoch."""
    val_acc = best - (best - 0.5) * (1 - e / epochs) ** 2 if e < epochs else best
    return {"epoch": e, "train_acc": min(1.0, val_acc + 0.01), "val_acc": val_acc, "test_acc": val_acc - 0.005,
            "train_loss": 1.05 - val_acc, "val_loss": 1.1 - val_acc, "test_loss": 1.12 - val_acc,
            "epoch_time_s": 2.0, "samples_per_s": 25000.0, "lr": 0.01}


def trial(trial_id: str, config: dict, seed: int, best: float, epochs: int, outcome: str = "completed",
          error: str = "") -> tuple[dict, list[dict]]:
    """A trials.csv row and its epochs.csv rows."""
    status = {"completed": "TERMINATED", "stopped_early": "TERMINATED", "diverged": "TERMINATED",
              "failed": "ERROR", "interrupted": "TERMINATED", "running": "RUNNING", "pending": "PENDING"}[outcome]
    rows = [epoch_row(best, epochs, e) for e in range(1, epochs + 1)]
    cfg = {f"config/{k}": v for k, v in config.items()}
    row = {"trial_id": trial_id, "status": status, "outcome": outcome, **cfg, "seed": seed, "epochs_run": epochs}
    for m in METRICS:
        values = [r[m] for r in rows]
        row[f"final_{m}"] = values[-1] if values else math.nan
        if m != "lr":
            best_of = min if ("loss" in m or m == "epoch_time_s") else max
            row[f"best_{m}"] = best_of(values) if values else math.nan
    at_best = max(rows, key=lambda r: r["val_acc"]) if rows else {}
    row.update({"best_epoch": at_best.get("epoch", math.nan), "test_acc_at_best": at_best.get("test_acc", math.nan),
                "test_loss_at_best": at_best.get("test_loss", math.nan), "params": 21840,
                "time_s": 2.0 * epochs, "node": "abc123", "error": error})
    return row, [{"trial_id": trial_id, "seed": seed, **cfg, **r} for r in rows]


def write_study(folder: Path, trials: list[tuple[dict, list[dict]]], *, varied: list[str], search="grid",
                scheduler="fifo", metric="val_acc", mode="max", ended="2026-01-01T10:00:00+00:00") -> Path:
    report = folder / "report"
    report.mkdir(parents=True)
    pd.DataFrame([t[0] for t in trials]).to_csv(report / "trials.csv", index=False)
    pd.DataFrame([r for t in trials for r in t[1]]).to_csv(report / "epochs.csv", index=False)
    study = {"name": folder.name, "dataset": "mnist", "model": "downsample_net",
             "space": {k: "grid_search(...)" for k in varied}, "epochs": 4, "metric": metric, "mode": mode,
             "search": search, "scheduler": scheduler, "num_samples": 1, "seeds": 3}
    (report / "study.json").write_text(json.dumps({
        "study": study, "varied_keys": varied, "study_file": f"studies/{folder.name}.py",
        "command": f"python -m hpo.run studies/{folder.name}.py", "smoke": False,
        "experiment_path": str(folder / "experiment"), "started": "2026-01-01T09:00:00+00:00", "ended": ended,
        "trials": {}, "versions": {"python": "3.11"}, "hardware": {"cpus": 2, "gpus": []}}))
    return folder


# Best val accuracies per (downsample, feature_size) over seeds 0, 1, 2: conv/14 is best, conv/7 within
# noise of it, pool/14 and pool/7 clearly worse.
GRID = {("conv", 14): [0.981, 0.984, 0.979], ("conv", 7): [0.978, 0.983, 0.976],
        ("pool", 14): [0.890, 0.884, 0.893], ("pool", 7): [0.790, 0.781, 0.795]}


def grid_trials() -> list:
    out = []
    for (down, size), accs in GRID.items():
        for seed, acc in enumerate(accs):
            config = {"downsample": down, "feature_size": size, "lr": 0.01, "model": "downsample_net",
                      "dataset": "mnist"}
            out.append(trial(f"t{len(out):02d}", config, seed, acc, epochs=4))
    return out


@pytest.fixture(scope="module")
def grid_report(tmp_path_factory) -> Path:
    """The grid study analysed once; tests read its files."""
    folder = write_study(tmp_path_factory.mktemp("grid") / "mnist_downsampling", grid_trials(),
                         varied=["downsample", "feature_size"])
    return analyse(folder, log=lambda _: None)


def expected(values: list[float]) -> tuple[float, float, float, float]:
    mean, std = statistics.mean(values), statistics.stdev(values)
    half = sps.t.ppf(0.975, len(values) - 1) * std / math.sqrt(len(values))
    return mean, std, mean - half, mean + half


# ---------------------------------------------------------------- numbers

def test_config_table_statistics_and_ties(tmp_path):
    data = load(write_study(tmp_path / "s", grid_trials(), varied=["downsample", "feature_size"]))
    table = config_table(data)
    assert [(r.downsample, r.feature_size) for r in table.itertuples()] == [
        ("conv", 14), ("conv", 7), ("pool", 14), ("pool", 7)]
    for _, row in table.iterrows():
        accs = GRID[(row["downsample"], row["feature_size"])]
        mean, std, lo, hi = expected(accs)
        assert row["n"] == 3
        assert row["best_val_acc mean"] == pytest.approx(mean, abs=1e-12)
        assert row["best_val_acc std"] == pytest.approx(std, abs=1e-12)
        assert row["best_val_acc ci_low"] == pytest.approx(lo, abs=1e-12)
        assert row["best_val_acc ci_high"] == pytest.approx(hi, abs=1e-12)
        # test_acc_at_best is val - 0.005 in every trial: same spread, shifted mean.
        assert row["test_acc_at_best mean"] == pytest.approx(mean - 0.005, abs=1e-12)
        assert row["test_acc_at_best std"] == pytest.approx(std, abs=1e-9)
        assert row["epochs_run mean"] == 4 and row["params mean"] == 21840
    # By hand: conv/14 mean 0.98133, sd 0.002517; conv/7 mean 0.979, sd 0.003606.
    assert table.loc[0, "best_val_acc mean"] == pytest.approx((0.981 + 0.984 + 0.979) / 3)
    assert table.loc[1, "best_val_acc std"] == pytest.approx(math.sqrt((0.001**2 + 0.004**2 + 0.003**2) / 2))
    # Games-Howell over all four configurations, in the table's order.
    p = sps.tukey_hsd(*(GRID[k] for k in [("conv", 14), ("conv", 7), ("pool", 14), ("pool", 7)]),
                      equal_var=False).pvalue
    assert table["verdict"].tolist() == ["best", "tied", "worse", "worse"]
    assert table["p_value"].iloc[1:].tolist() == pytest.approx(p[1:, 0].tolist()) and p[1, 0] >= 0.05
    assert math.isnan(table.loc[0, "p_value"]) and p[2, 0] < 0.05 and p[3, 0] < 0.05
    assert table["letters"].tolist() == ["a", "a", "b", "c"]  # pool/14 and pool/7 differ from everything


def test_single_seed_is_untested_and_min_mode(tmp_path):
    trials = [trial(f"t{i}", {"batch_size": bs}, 0, acc, 3) for i, (bs, acc) in enumerate([(50, 0.97), (100, 0.98)])]
    data = load(write_study(tmp_path / "s", trials, varied=["batch_size"]))
    table = config_table(data)
    assert table["batch_size"].tolist() == [100, 50]
    assert table["verdict"].tolist() == ["best", "n=1, untested"]
    assert math.isnan(table.loc[0, "best_val_acc std"]) and math.isnan(table.loc[0, "best_val_acc ci_low"])
    # Ranked by the study's own metric and mode: val_loss (min) = 1.1 - val_acc at the last epoch.
    data = load(write_study(tmp_path / "l", trials, varied=["batch_size"], metric="val_loss", mode="min"))
    assert config_table(data)["batch_size"].tolist() == [100, 50]


def test_factor_tables_are_marginal_means(tmp_path):
    data = load(write_study(tmp_path / "s", grid_trials(), varied=["downsample", "feature_size"]))
    tables = factor_tables(data)
    down = tables["downsample"].set_index("downsample")
    conv = GRID[("conv", 14)] + GRID[("conv", 7)]
    pool = GRID[("pool", 14)] + GRID[("pool", 7)]
    for level, values in (("conv", conv), ("pool", pool)):
        mean, std, lo, hi = expected(values)
        assert down.loc[level, "n"] == 6
        assert down.loc[level, "best_val_acc mean"] == pytest.approx(mean, abs=1e-12)
        assert down.loc[level, "best_val_acc std"] == pytest.approx(std, abs=1e-12)
        assert down.loc[level, "best_val_acc ci_low"] == pytest.approx(lo, abs=1e-12)
        assert down.loc[level, "best_val_acc ci_high"] == pytest.approx(hi, abs=1e-12)
    assert down.loc["conv", "verdict"] == "best" and down.loc["pool", "verdict"] == "worse"
    size = tables["feature_size"]
    assert size["feature_size"].tolist() == [7, 14]  # levels in their natural order
    mean14 = statistics.mean(GRID[("conv", 14)] + GRID[("pool", 14)])
    assert size.set_index("feature_size").loc[14, "best_val_acc mean"] == pytest.approx(mean14, abs=1e-12)


# ---------------------------------------------------------------- files

def test_all_files_written(grid_report):
    for name in ("report.md", "report.html", "tables.xlsx"):
        assert (grid_report / name).stat().st_size > 0
    pngs = sorted(p.name for p in (grid_report / "figures").glob("*.png"))
    assert {"learning_curves.png", "factor_effects.png", "parallel_coordinates.png"} <= set(pngs)
    sheets = pd.read_excel(grid_report / "tables.xlsx", sheet_name=None)
    assert {"configurations", "by downsample", "by feature_size", "outcomes", "trials"} <= set(sheets)
    assert sheets["configurations"]["best_val_acc mean"].iloc[0] == pytest.approx(statistics.mean(GRID[("conv", 14)]))
    page = (grid_report / "report.html").read_text()
    for png in (grid_report / "figures").glob("*.png"):
        assert base64.b64encode(png.read_bytes()).decode() in page
    assert "<img src=\"figures/" not in page and "http" not in page.replace("http-equiv", "")
    md = (grid_report / "report.md").read_text()
    assert "98.13% ± 0.25" in md  # conv/14: mean 98.133%, sd 0.2517 points
    assert "Games-Howell" in md and "family-wise error rate at 5%" in md and "tied" in md


def test_cli_error_for_a_folder_that_is_not_a_study(tmp_path, capsys):
    r = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path / "missing")], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "is not a folder" in r.stderr
    (tmp_path / "x").mkdir()
    assert main([str(tmp_path / "x")]) != 0
    assert "is not a study's results folder" in capsys.readouterr().err
    (tmp_path / "y" / "experiment").mkdir(parents=True)
    with pytest.raises(AnalysisError, match="no report yet"):
        analyse(tmp_path / "y")


@pytest.mark.parametrize("content", ["{\"study\": ", "[1, 2]", "{\"study\": \"x\"}", "\udcff"])
def test_a_damaged_study_json_is_one_message(tmp_path, capsys, content):
    folder = write_study(tmp_path / "s", grid_trials(), varied=["downsample", "feature_size"])
    (folder / "report" / "study.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    assert main([str(folder)]) == 2
    err = capsys.readouterr().err
    assert "study.json" in err and "Traceback" not in err


def test_empty_trials_beside_epochs_is_noted(tmp_path):
    folder = write_study(tmp_path / "s", grid_trials(), varied=["downsample", "feature_size"])
    (folder / "report" / "trials.csv").write_text("")
    data = load(folder)
    assert any("has no trials, while epochs.csv has epochs of 12 trial(s)" in n for n in data.notes), data.notes


def test_config_strings_are_text_in_report_md(tmp_path):
    trials = [trial(f"t{i}", {"optimizer": name, "lr": 0.01}, seed, acc, epochs=2)
              for i, (name, seed, acc) in enumerate([("<img src=x onerror=alert(1)>", 0, 0.9),
                                                     ("<img src=x onerror=alert(1)>", 1, 0.91),
                                                     ("sgd", 0, 0.8), ("sgd", 1, 0.81)])]
    out = analyse(write_study(tmp_path / "s", trials, varied=["optimizer"]), log=lambda _: None)
    md = (out / "report.md").read_text()
    assert "&lt;img src=x" in md and "<img src=x" not in md


def test_partial_study(tmp_path):
    config = {"batch_size": 50}
    trials = [trial("a", config, 0, 0.97, 4), trial("b", config, 1, 0.975, 4),
              trial("c", {"batch_size": 100}, 0, 0.96, 2, outcome="running"),
              trial("d", {"batch_size": 100}, 1, 0.0, 0, outcome="failed",
                    error="RuntimeError: CUDA out of memory"),
              trial("e", {"batch_size": 200}, 0, 0.2, 3, outcome="diverged", error="loss became nan"),
              trial("f", {"batch_size": 200}, 1, 0.0, 0, outcome="pending"),
              trial("g", {"batch_size": 400}, 0, 0.9, 2, outcome="interrupted")]
    folder = write_study(tmp_path / "partial", trials, varied=["batch_size"], ended=None)
    lines = []
    out = analyse(folder, log=lines.append)
    assert lines[-1].startswith("report: ") and lines[-1].endswith("report.html")
    md = (out / "report.md").read_text()
    assert "7 trials: 2 completed, 1 diverged, 1 failed, 1 interrupted, 1 running, 1 pending." in md
    assert "3 trials are running, pending or interrupted" in md
    assert "CUDA out of memory" in md and "loss became nan" in md
    sheets = pd.read_excel(out / "tables.xlsx", sheet_name=None)
    counts = sheets["outcomes"].iloc[0]
    assert counts["running"] == 1 and counts["failed"] == 1 and counts["interrupted"] == 1 and counts["total"] == 7
    # Running and interrupted trials are left out of the comparison; the diverged one is in it.
    assert sorted(sheets["configurations"]["batch_size"]) == [50, 200]


def test_empty_and_minimal_reports(tmp_path):
    folder = tmp_path / "empty"
    (folder / "report").mkdir(parents=True)
    (folder / "report" / "trials.csv").write_text("trial_id,status,outcome,seed\n")
    out = analyse(folder, log=lambda _: None)  # no study.json, no epochs.csv, no trials yet
    assert "0 trials" in (out / "report.md").read_text()


def test_search_study_rungs_and_importance(tmp_path):
    trials = []
    for i in range(12):  # lr decides the accuracy; optimizer does not; ASHA stops the weak ones early
        lr = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2][i % 6]
        acc = 0.80 + 0.03 * (i % 6) + 0.001 * (i // 6)
        epochs, outcome = (8, "completed") if acc > 0.9 else ((2, "stopped_early") if acc < 0.85 else
                                                               (4, "stopped_early"))
        config = {"lr": lr, "optimizer": ["sgd", "adam"][i // 6], "batch_size": 64 * (1 + i % 3)}
        trials.append(trial(f"t{i:02d}", config, 0, acc, epochs, outcome))
    folder = write_study(tmp_path / "tpe", trials, varied=["lr", "optimizer", "batch_size"], search="optuna",
                         scheduler="asha")
    data = load(folder)
    rungs = rung_table(data)
    assert rungs["stopped after epoch"].tolist() == [2, 4]
    assert rungs["trials stopped"].tolist() == [4, 4]
    assert rungs["best_val_acc best"].tolist() == pytest.approx([0.831, 0.891])
    importance, evaluator = importance_table(data)
    assert set(importance["parameter"]) == {"lr", "optimizer", "batch_size"}
    assert importance.iloc[0]["parameter"] == "lr" and importance["importance"].sum() == pytest.approx(1)
    out = analyse(folder, log=lambda _: None)
    sheets = pd.read_excel(out / "tables.xlsx", sheet_name=None)
    assert {"top trials", "asha rungs", "importance"} <= set(sheets)
    assert len(sheets["top trials"]) == 10
    assert {"asha_survival.png", "importance.png"} <= {p.name for p in (out / "figures").glob("*.png")}


def test_seeds_asha_stopped_at_different_epochs_are_noted(tmp_path):
    """A configuration whose seeds ASHA stopped at different epochs (seeds as lone trials) is named in the
    configurations section; a seed that diverged, or seeds stopped together, are not such a case."""
    from analysis.tables import uneven_epochs

    trials = [trial("a0", {"lr": 0.1}, 0, 0.90, 8), trial("a1", {"lr": 0.1}, 1, 0.80, 2, "stopped_early"),
              trial("a2", {"lr": 0.1}, 2, 0.91, 8),
              trial("b0", {"lr": 0.01}, 0, 0.85, 8), trial("b1", {"lr": 0.01}, 1, 0.30, 3, "diverged"),
              trial("b2", {"lr": 0.01}, 2, 0.86, 8),
              *(trial(f"c{s}", {"lr": 0.001}, s, 0.5, 2, "stopped_early") for s in range(3))]
    folder = write_study(tmp_path / "uneven", trials, varied=["lr"], scheduler="asha")
    uneven = uneven_epochs(load(folder))
    assert uneven.to_dict("records") == [{"lr": 0.1, "min": 2, "max": 8}]
    analyse(folder, log=lambda _: None)
    text = (folder / "report" / "report.md").read_text()
    assert "Note: in 1 configuration(s) ASHA stopped some seeds and not others (lr=0.1: 2 to 8 epochs)" in text


# ---------------------------------------------------------------- checkpoint figures

def test_checkpoint_figures_skipped_with_a_note(grid_report):
    assert "No folder for the best trial" in (grid_report / "report.md").read_text()


def test_checkpoint_figures_from_a_real_trial(tmp_path, fake_mnist_dir):
    """A checkpoint saved by the real trainable (one epoch on the fake MNIST), where Ray would put it."""
    import torch

    from analysis.samples import load_best
    from analysis.sections import _best_trial_section
    from analysis.tables import Skipped
    from hpo.trainable import RunSettings, train_epochs

    settings = RunSettings("mnist", "mnist_net", epochs=1, data_dir=str(fake_mnist_dir), max_train=64, max_eval=64)
    *_, (_, trained) = train_epochs({"batch_size": 64, "lr": 0.05, "seed": 0}, settings, device="cpu")
    trials = [trial("ab12c_00000", {"batch_size": 64}, 0, 0.5, 1), trial("ab12c_00001", {"batch_size": 32}, 0, 0.4, 1)]
    folder = write_study(tmp_path / "real", trials, varied=["batch_size"])
    trial_dir = folder / "experiment" / "tune_trainable_ab12c_00000_0_batch_size=64_2026-01-01_09-00-00"
    (trial_dir / "checkpoint_000000").mkdir(parents=True)
    torch.save(trained.state(), trial_dir / "checkpoint_000000" / "state.pt")
    table = pd.read_csv(folder / "report" / "trials.csv")  # the report writer names each trial's checkpoint
    table["checkpoint"] = ["experiment/" + trial_dir.name + "/checkpoint_000000", ""]
    table.to_csv(folder / "report" / "trials.csv", index=False)
    section = _best_trial_section(load(folder), tmp_path, log=lambda _: None, trust=False)
    assert [p.name for p, _ in section.figures] == ["predictions.png", "feature_maps.png"]

    # a folder from elsewhere whose checkpoint is a pickle that runs code: nothing runs, the report says why
    class Payload:
        def __reduce__(self):
            return (Path(tmp_path / "ran").write_text, ("code from the results folder ran",))
    torch.save({**trained.state(), "config": Payload()}, trial_dir / "checkpoint_000000" / "state.pt")
    data = load(folder)
    section = _best_trial_section(data, tmp_path, log=lambda _: None, trust=True)
    assert not section.figures and not (tmp_path / "ran").exists()
    assert "holds pickled objects other than tensors" in data.notes[-1], data.notes
    shutil.rmtree(trial_dir / "checkpoint_000000")
    with pytest.raises(Skipped, match="No checkpoint"):
        load_best(load(folder))


# ---------------------------------------------------------------- the page in a browser

def chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_html_renders_in_chromium(grid_report, tmp_path):
    page = grid_report / "report.html"
    dom = chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr
    assert dom.stdout.count("<table") >= 4 and "Per configuration" in dom.stdout and "98.13%" in dom.stdout
    shot = tmp_path / "page.png"
    r = chromium([f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", page.as_uri()], tmp_path)
    assert r.returncode == 0 and shot.exists(), r.stderr
    # Clicking a header sorts the rows by its numbers (the page's own script, run by the browser).
    click = ('<script>const t = document.querySelectorAll("table.sortable")[1], th = t.tHead.rows[0].cells[3];'
             ' th.click(); document.title = [...t.tBodies[0].rows].map(r => r.cells[0].textContent'
             ' + "/" + r.cells[1].textContent).join(" ");</script></body>')
    sorting = tmp_path / "sorting.html"
    sorting.write_text(page.read_text().replace("</body>", click))
    dom = chromium(["--dump-dom", sorting.as_uri()], tmp_path)
    assert "<title>pool/7 pool/14 conv/7 conv/14</title>" in dom.stdout
    from PIL import Image

    pixels = Image.open(shot).convert("L")
    assert pixels.size == (1280, 2000)
    low, high = pixels.getextrema()
    assert high - low > 100  # text and figures, not a blank page


# ---------------------------------------------------------------- hostile or damaged input

def test_formula_like_config_values_stay_text(tmp_path):
    from openpyxl import load_workbook

    trials = [trial(f"t{i}", {"name": name, "shift": shift}, seed, 0.9 + 0.01 * i, 2)
              for i, (name, shift) in enumerate([("=1+1", -1), ("@sum", -2)]) for seed in (0, 1)]
    out = analyse(write_study(tmp_path / "s", trials, varied=["name", "shift"]), log=lambda _: None)
    sheet = load_workbook(out / "tables.xlsx")["trials"]
    header = [c.value for c in sheet[1]]
    names = [row[header.index("config/name")] for row in sheet.iter_rows(min_row=2)]
    shifts = [row[header.index("config/shift")] for row in sheet.iter_rows(min_row=2)]
    assert [c.value for c in names] == ["=1+1", "=1+1", "@sum", "@sum"]
    assert all(c.data_type == "s" for c in names)  # text, not a formula ('f')
    assert [c.value for c in shifts] == [-1, -1, -2, -2] and all(c.data_type == "n" for c in shifts)
    configs = load_workbook(out / "tables.xlsx")["configurations"]
    assert any(c.value == "=1+1" and c.data_type == "s" for row in configs.iter_rows() for c in row)


def test_dollar_signs_in_config_values(tmp_path, monkeypatch):
    """Two `$` in a label are mathtext to matplotlib: "a$^$b" fails to parse, "a$b$c" would print an italic b."""
    import matplotlib.text

    from analysis import figures

    texts = []
    save = figures.save

    def keep_texts(fig, path):
        fig.canvas.draw()
        texts.extend(t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_visible())
        return save(fig, path)

    monkeypatch.setattr(figures, "save", keep_texts)
    lrs = [10 ** (-5 + i * 4 / 13) for i in range(14)]  # over 12 values spanning 4 decades: a log axis
    trials = [trial(f"t{i:02d}", {"name": name, "lr": lr}, 0, 0.8 + 0.01 * i + 0.05 * j, 3)
              for j, name in enumerate(["a$b$c", "a$^$b"]) for i, lr in enumerate(lrs)]
    out = analyse(write_study(tmp_path / "s", trials, varied=["name", "lr"]), log=lambda _: None)
    pngs = {p.name for p in (out / "figures").glob("*.png")}
    assert {"learning_curves.png", "factor_effects.png", "parallel_coordinates.png"} <= pngs
    assert "a$^$b" in texts and "a$b$c" in texts  # drawn as written (tick labels of the factor panel)
    assert not any("mathdefault" in t for t in texts)  # log axis labels are plain numbers, not raw mathtext


def test_cut_short_trials_csv(tmp_path, capsys):
    folder = write_study(tmp_path / "s", grid_trials(), varied=["downsample", "feature_size"])
    path = folder / "report" / "trials.csv"
    lines = path.read_text().splitlines(keepends=True)
    last = lines[-1]  # t11: pool/7, seed 2
    path.write_text("".join(lines[:-1]) + last[: len(last) // 3])  # cut mid-line, no line end
    data = load(folder)
    err = capsys.readouterr().err
    assert "warning:" in err and "cut short" in err and "t11" in err
    assert any("cut short" in n and "t11" in n for n in data.notes)
    assert "t11" not in set(data.trials["trial_id"])
    table = config_table(data).set_index(["downsample", "feature_size"])
    assert table.loc[("pool", 7), "n"] == 2
    assert table.loc[("pool", 7), "best_val_acc mean"] == pytest.approx(statistics.mean(GRID[("pool", 7)][:2]))
    out = analyse(folder, log=lambda _: None)
    assert "trials.csv looks cut short" in (out / "report.md").read_text()

    # A whole row lost (the file ends cleanly): epochs.csv still has that trial.
    path.write_text("".join(lines[:-2]))
    data = load(folder)
    assert "t10" in capsys.readouterr().err
    assert any("epochs of 2 trial(s)" in n and "t10, t11" in n for n in data.notes)

    # An intact file: no note.
    path.write_text("".join(lines))
    assert not any("cut short" in n for n in load(folder).notes)
    assert "cut short" not in capsys.readouterr().err


# ---------------------------------------------------------------- the trial timeline

# (trial, outcome, started_s, ended_s). By hand, the trials in flight: 0-4 s a and b (2), 4-5 a (1), 5-10 a and c
# (2), 10-12 c (1), 12-15 c and d (2; d is running: it lasts to 15 s, the latest time in the table); e never started.
TIMES = [("a", "completed", 0.0, 10.0), ("b", "completed", 0.0, 4.0), ("c", "stopped_early", 5.0, 15.0),
         ("d", "running", 12.0, math.nan), ("e", "pending", math.nan, math.nan)]
MEAN_IN_FLIGHT = (2 * 4 + 1 * 1 + 2 * 5 + 1 * 2 + 2 * 3) / 15  # = (10 + 4 + 10 + 3) trial-seconds / 15 s = 1.8


def timed_study(folder: Path, slots=4, utilisation=None, times=True) -> Path:
    trials = []
    for i, (trial_id, outcome, started, ended) in enumerate(TIMES):
        row, epochs = trial(trial_id, {"batch_size": [50, 100][i % 2]}, i // 2, 0.9 + 0.01 * i,
                            0 if outcome == "pending" else 2, outcome)
        if times is True:
            row.update(started_s=started, ended_s=ended)
        elif times == "nan":
            row.update(started_s=math.nan, ended_s=math.nan)
        trials.append((row, epochs))
    folder = write_study(folder, trials, varied=["batch_size"], ended=None)
    path = folder / "report" / "study.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "slots": slots, "slot_utilisation": utilisation}))
    return folder


def test_timeline_in_flight_by_hand(tmp_path):
    from analysis.tables import in_flight, occupancy, trial_times

    data = load(timed_study(tmp_path / "s"))
    times = trial_times(data)
    assert times["trial_id"].tolist() == ["b", "a", "c", "d"]  # by start (then end); e never started
    assert times["ended_s"].tolist() == [4, 10, 15, 15] and times["open"].tolist() == [False, False, False, True]
    steps = in_flight(times)
    assert steps["time_s"].tolist() == [0, 4, 5, 10, 12, 15]
    assert steps["in_flight"].tolist() == [2, 1, 2, 1, 2, 0]
    o = occupancy(data, times)
    assert MEAN_IN_FLIGHT == pytest.approx(1.8)
    assert o["mean"] == pytest.approx(MEAN_IN_FLIGHT) and o["peak"] == 2 and o["slots"] == 4
    assert o["utilisation"] == pytest.approx(MEAN_IN_FLIGHT / 4)  # no slot_utilisation in study.json: mean / slots
    assert o["median_s"] == pytest.approx(statistics.median([4, 10, 10, 3]))
    # hpo.run's own measure (over its whole wall time) is the one reported when study.json has it.
    assert occupancy(load(timed_study(tmp_path / "u", utilisation=0.41)), times)["utilisation"] == 0.41


def test_a_seed_group_is_one_trial_in_the_timeline(tmp_path):
    """The three seeds of a seed group (trials.csv's `group`) took one slot: one bar, from the first seed's
    start to the last one's end; in flight 2 at most with a lone trial beside it, not 4."""
    from analysis.tables import in_flight, trial_times

    rows = []
    for trial_id, group, started, ended, outcome in [("g_s0", "g", 1.0, 9.0, "completed"),
                                                     ("g_s1", "g", 1.0, 9.0, "completed"),
                                                     ("g_s2", "g", 1.0, 6.0, "diverged"),
                                                     ("x", "", 2.0, 5.0, "stopped_early")]:
        row, epochs = trial(trial_id, {"lr": 0.1 if group else 0.01}, 0, 0.9, 2, outcome)
        rows.append(({**row, "group": group, "started_s": started, "ended_s": ended}, epochs))
    times = trial_times(load(write_study(tmp_path / "g", rows, varied=["lr"])))
    assert times[["trial_id", "outcome", "started_s", "ended_s"]].values.tolist() == [
        ["g", "completed", 1.0, 9.0], ["x", "stopped_early", 2.0, 5.0]]
    assert in_flight(times)["in_flight"].max() == 2


def test_timeline_figure_and_report_line(tmp_path, monkeypatch):
    from analysis import figures

    titles = {}
    save = figures.save

    def keep_title(fig, path):
        titles[path.name] = fig.get_suptitle()
        return save(fig, path)

    monkeypatch.setattr(figures, "save", keep_title)
    out = analyse(timed_study(tmp_path / "s"), log=lambda _: None)
    png = out / "figures" / "timeline.png"
    assert png.stat().st_size > 0
    assert titles["timeline.png"].endswith("trial timeline, slot utilisation 45%")
    md = (out / "report.md").read_text()
    line = f"Trials in flight: mean {MEAN_IN_FLIGHT:.1f} of 4 slots (utilisation {MEAN_IN_FLIGHT / 4:.0%})"
    assert line == "Trials in flight: mean 1.8 of 4 slots (utilisation 45%)" and line in md
    assert "at most 2 at once, over 15.0 s" in md
    # Below 70%: why slots may stand idle, with this study's numbers (median trial 7 s; 5 trials for 4 slots).
    assert "Note: the trial slots were busy 45% of the time" in md
    assert "the median trial here ran 7.0 s" in md and "5 trials for 4 slots" in md and "--max-concurrent" in md
    page = (out / "report.html").read_text()
    assert line in page and base64.b64encode(png.read_bytes()).decode() in page
    assert "No trial timeline" not in md

    # 2 slots: 90% busy, no note; study.json's own utilisation wins over the table's.
    md = (analyse(timed_study(tmp_path / "two", slots=2), log=lambda _: None) / "report.md").read_text()
    assert "Trials in flight: mean 1.8 of 2 slots (utilisation 90%)" in md and "slots were busy" not in md
    md = (analyse(timed_study(tmp_path / "own", utilisation=0.41), log=lambda _: None) / "report.md").read_text()
    assert "Trials in flight: mean 1.8 of 4 slots (utilisation 41%)" in md and "busy 41% of the time" in md
    # An older study.json without slots: the mean alone.
    md = (analyse(timed_study(tmp_path / "old", slots=None), log=lambda _: None) / "report.md").read_text()
    assert "Trials in flight: mean 1.8 (slots unknown" in md
    assert "utilisation" not in md.split("Trials in flight")[1][:80]


@pytest.mark.parametrize("times", [False, "nan"])
def test_timeline_without_times_is_a_note(tmp_path, times):
    """A report from an older hpo.run (no started_s/ended_s), or times all unknown: a note, no figure, no crash."""
    out = analyse(timed_study(tmp_path / "s", times=times), log=lambda _: None)
    assert not (out / "figures" / "timeline.png").exists()
    md = (out / "report.md").read_text()
    assert "Note: No trial timeline: trials.csv has no started_s/ended_s times" in md
    assert "Trials in flight" not in md and "slots were busy" not in md
    assert "5 trials: 2 completed, 1 stopped early, 1 running, 1 pending." in md
