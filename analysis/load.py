"""Read a study's report files (docs/report-format.md) into one `StudyData`.

Only the files are read, never Ray's experiment directory: a study that is
still running or was interrupted has them too, with fewer or unfinished trials.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

# The outcomes, in the order the report lists them (the first three have numbers to compare): the
# report's contract, named once in hpo/study.py.
from hpo.registry import SCHEDULERS, SEARCHES
from hpo.study import FINAL, FINISHED, OUTCOMES  # noqa: F401  (tables.py, figures.py, sections.py import them here)


class AnalysisError(Exception):
    """A folder that cannot be analysed; the message is one paragraph for a person."""


# For reports written before `outcome` existed.
STATUS_OUTCOME = {"TERMINATED": "completed", "ERROR": "failed", "RUNNING": "running",
                  "PAUSED": "running", "PENDING": "pending"}


@dataclass
class StudyData:
    dir: Path  # results/<study>
    meta: dict  # all of study.json
    trials: pd.DataFrame  # trials.csv, with `outcome` filled in
    epochs: pd.DataFrame  # epochs.csv (empty when absent)
    notes: list[str] = field(default_factory=list)  # what the report should say it could not do
    report_folder: Path | None = None  # where the report goes, when not dir/report (a comparison's --out)

    @property
    def report_dir(self) -> Path:
        return self.report_folder or self.dir / "report"

    @property
    def study(self) -> dict:
        return self.meta.get("study", {})

    @property
    def name(self) -> str:
        return self.study.get("name") or self.dir.name

    @property
    def metric(self) -> str:
        """The study's metric; of a multi-objective study, the first (the others: `objectives`)."""
        metric = self.study.get("metric", "val_acc")
        return metric[0] if isinstance(metric, list) else metric

    @property
    def mode(self) -> str:
        mode = self.study.get("mode", "max")
        return mode[0] if isinstance(mode, list) else mode

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(metric, mode) of each objective: one, or several for a multi-objective study."""
        metric, mode = self.study.get("metric", "val_acc"), self.study.get("mode", "max")
        return list(zip(metric, mode)) if isinstance(metric, list) else [(metric, mode)]

    @property
    def target(self) -> str:
        """The trials.csv column the study is judged by."""
        return f"best_{self.metric}"

    @property
    def varied_keys(self) -> list[str]:
        return list(self.meta.get("varied_keys", []))

    @property
    def key_columns(self) -> list[str]:
        return [f"config/{k}" for k in self.varied_keys]

    @property
    def search(self):
        """What the study's search can do (hpo.registry.Search); None for a name this hpo does not know."""
        return SEARCHES.get(self.study.get("search"))

    @property
    def stops_early(self) -> bool:
        """Its scheduler stops trials at rungs (ASHA)."""
        scheduler = SCHEDULERS.get(self.study.get("scheduler"))
        return bool(scheduler and scheduler.stops_early)

    @property
    def is_search(self) -> bool:
        """A learning search or early stopping: top trials, rungs and importance make sense."""
        return bool(self.search and self.search.learns) or self.stops_early

    @property
    def finished(self) -> pd.DataFrame:
        """Trials with final numbers (completed, stopped early or diverged) and a value of the metric."""
        t = self.trials
        return t[t["outcome"].isin(FINISHED) & t[self.target].notna()]


def find_study_dir(path: Path) -> Path:
    """The study folder for `path`, which may also be its report/ folder."""
    path = Path(path)
    if path.name == "report" and (path / "trials.csv").is_file():
        return path.parent
    return path


def load(path: Path) -> StudyData:
    study_dir = find_study_dir(path)
    report = study_dir / "report"
    if not study_dir.is_dir():
        raise AnalysisError(
            f"{path} is not a folder. Pass a study's results folder, e.g. `python -m analysis results/mnist_batchsize`,"
            f" the folder `python -m hpo.run` made for the study (it holds report/trials.csv)."
        )
    if not (report / "trials.csv").is_file():
        if (study_dir / "experiment").is_dir():
            raise AnalysisError(
                f"{study_dir} holds Ray's experiment directory (experiment/) but no report yet: {report}/trials.csv"
                f" is missing. hpo.run writes it as soon as a trial reports an epoch, so the study was stopped"
                f" before that (or its report was deleted). Continue the study with"
                f" `python -m hpo.run STUDY.py --resume`, which writes the report, then run the analysis again."
            )
        raise AnalysisError(
            f"{study_dir} is not a study's results folder: it has no report/trials.csv and no experiment/ folder."
            f" Pass the folder `python -m hpo.run` made for the study, e.g. results/mnist_batchsize."
        )
    notes: list[str] = []
    trials = _read_csv(report / "trials.csv")
    epochs = _read_csv(report / "epochs.csv") if (report / "epochs.csv").is_file() else pd.DataFrame()
    if epochs.empty:
        notes.append("epochs.csv is missing or empty: no learning curves.")
    trials = _check_cut_short(report / "trials.csv", trials, epochs, notes)
    meta = _read_meta(report / "study.json", trials, notes)
    data = StudyData(study_dir, meta, _with_outcome(trials), epochs, notes)
    _check_columns(data)
    return data


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype={"trial_id": str})  # Ray's ids may look like numbers: keep them text
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise AnalysisError(f"Cannot read {path}: {e}. It should be a CSV file written by hpo.report.") from None


def _check_cut_short(path: Path, trials: pd.DataFrame, epochs: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """hpo.report replaces trials.csv whole, but a copy (a full disk, an interrupted download) can end mid-line;
    pandas fills a short row's missing fields with NaN and says nothing. Leave such rows out, say so.
    (A study read while it runs may rarely show trials in epochs.csv that trials.csv gets a moment later.)"""
    found = []
    text = path.read_text(errors="replace")
    if text and not text.endswith("\n"):
        found.append("its last line has no line end")
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]  # pandas skips blank lines too: same row numbers
    if rows and not trials.empty:
        short = [i for i, r in enumerate(rows[1:]) if len(r) < len(rows[0])]
        if short:
            ids = trials.loc[short, "trial_id"] if "trial_id" in trials else pd.Series(short)
            found.append(f"{len(short)} row(s) have fewer fields than its header (trial(s)"
                         f" {', '.join(map(str, ids))}): left out, their numbers may be cut mid-value")
            trials = trials.drop(index=short).reset_index(drop=True)
    if trials.empty and "trial_id" in epochs and epochs["trial_id"].notna().any():
        found.append(f"it has no trials, while epochs.csv has epochs of {epochs['trial_id'].nunique()} trial(s): "
                     "they are in the learning curves only")
    elif "trial_id" in epochs and "trial_id" in trials:
        missing = sorted(set(epochs["trial_id"].dropna()) - set(trials["trial_id"].dropna()))
        if missing:
            found.append(f"epochs.csv has epochs of {len(missing)} trial(s) it lacks ({', '.join(missing[:5])}"
                         f"{', ...' if len(missing) > 5 else ''}): they are in the learning curves only")
    if found:
        text = (f"trials.csv looks cut short (or older than epochs.csv): {'; '.join(found)}."
                " The tables show what is left.")
        notes.append(text)
        print(f"warning: {path}: {text}", file=sys.stderr)
    return trials


def _read_meta(path: Path, trials: pd.DataFrame, notes: list[str]) -> dict:
    if path.is_file():
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AnalysisError(f"Cannot read {path}: {e}. It should be the JSON file written by hpo.report.") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("study", {}), dict):
            raise AnalysisError(f"{path} is not a study's record: it should be a JSON object with a \"study\" object "
                                "in it, as hpo.report writes it.")
        return meta
    # Without study.json: guess the varied keys from the trials, judge by val_acc.
    config = [c for c in trials.columns if c.startswith("config/")]
    varied = [c.removeprefix("config/") for c in config if trials[c].nunique(dropna=False) > 1]
    notes.append(f"{path.name} is missing: assumed metric val_acc (max) and varied keys {varied or 'none'}.")
    return {"study": {"metric": "val_acc", "mode": "max"}, "varied_keys": varied}


def _with_outcome(trials: pd.DataFrame) -> pd.DataFrame:
    trials = trials.copy()
    if "outcome" not in trials:
        status = trials["status"] if "status" in trials else pd.Series("", index=trials.index)
        trials["outcome"] = status.map(STATUS_OUTCOME)
    trials["outcome"] = trials["outcome"].fillna("unknown").astype(str)
    return trials


def _check_columns(data: StudyData) -> None:
    t = data.trials
    if t.empty:
        # A study whose first trial has not reported yet: give every expected column so the tables are empty.
        data.trials = pd.DataFrame(columns=["trial_id", "outcome", "seed", data.target, *data.key_columns])
        return
    if data.target not in t:
        raise AnalysisError(
            f"{data.report_dir / 'trials.csv'} has no column {data.target!r}, the best value of the study's metric"
            f" {data.metric!r} (study.json). Its columns: {', '.join(map(str, t.columns))}."
        )
    missing = [k for k, c in zip(data.varied_keys, data.key_columns) if c not in t]
    if missing:
        data.notes.append(f"trials.csv has no column for varied key(s) {missing}: left out.")
        data.meta["varied_keys"] = [k for k in data.varied_keys if k not in missing]
