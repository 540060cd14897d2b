"""Writes results/<study>/report/ (trials.csv, epochs.csv, study.json) while a
study runs: a Ray Tune callback in the driver that keeps every trial's epochs
and rewrites the report whenever a trial finishes. Format: docs/report-format.md.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd
from ray import tune

from hpo import storage
from hpo.registry import GROUP_KEY
from hpo.study import FINAL, METRICS, OUTCOMES, Study, seed_of

HIGHER_IS_BETTER = {m: m.endswith("_acc") or m == "samples_per_s" for m in METRICS}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in ("torch", "torchvision", "ray", "optuna", "pandas"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def hardware() -> dict:
    import torch
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(), "gpus": gpus}


def read_result_files(experiment_path) -> dict[str, dict[int, dict]]:
    """Epochs already reported by an earlier run of this experiment (for --resume)."""
    history: dict[str, dict[int, dict]] = {}
    for trial_dir in storage.subfolders(str(experiment_path)):
        text = storage.read_text(f"{trial_dir}/result.json") or ""  # none: a trial that never reported
        for line in text.splitlines():
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short when the driver was killed
            if "epoch" in result and "trial_id" in result and "error" not in result:
                history.setdefault(result["trial_id"], {})[int(result["epoch"])] = result
    return history


def error_line(trial) -> str:
    """The trial's last word: an error it reported as its result (out of memory, the same error again
    on a retry), else the last line of the exception Ray Tune recorded."""
    if (trial.last_result or {}).get("error"):
        return trial.last_result["error"]
    if trial.error_file and os.path.exists(trial.error_file):
        lines = [line.strip() for line in Path(trial.error_file).read_text(errors="replace").splitlines()
                 if line.strip()]
        return lines[-1] if lines else "failed"
    return (trial.last_result or {}).get("error") or ""


def earlier_final_outcomes(trials_csv: Path, mirrored: str | None = None) -> dict[str, str]:
    """Trial outcomes a resumed study's earlier run found final (finished or failed): Ray Tune restores
    those trials, but not whether it completed them or the experiment's end cut them. `mirrored`: the
    copy in s3://-like storage, for a resume on another machine."""
    import io

    text = trials_csv.read_text() if trials_csv.exists() else (mirrored and storage.read_text(mirrored))
    if not text:
        return {}
    try:
        table = pd.read_csv(io.StringIO(text), usecols=["trial_id", "outcome"], dtype=str)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return {}
    final = table[table["outcome"].isin(FINAL)]
    return dict(zip(final["trial_id"], final["outcome"]))


def checkpoint_path(trial, experiment: str = "experiment") -> str:
    """The trial's latest checkpoint folder, relative to the study folder (as the analysis reads it);
    `experiment`: the name of Ray's experiment folder (hpo.rounds.experiment_name)."""
    from hpo.ray_workarounds import trial_folder_name

    checkpoint, folder = getattr(trial, "checkpoint", None), trial_folder_name(trial)
    if checkpoint is None or folder is None:
        return ""
    return f"{experiment}/{folder}/{Path(checkpoint.path).name}"


def outcome(trial, epochs: dict[int, dict], study: Study, completed: bool | None = None) -> str:
    """The one rule for what happened to a trial (OUTCOMES), used by the report and the live status.
    `epochs`: its results by epoch number, at least its last one. `completed`: whether Ray Tune completed
    the trial (its on_trial_complete: it finished, or the scheduler stopped it), when known. A trial cut
    at the end of the experiment (the time budget, Ctrl-C) is not, even at a rung epoch."""
    epochs_run = max(epochs, default=0)
    last = epochs[epochs_run] if epochs else {}
    if trial.status == "ERROR" or (trial.last_result or {}).get("error"):
        return "failed"
    if last.get("diverged"):
        return "diverged"
    if trial.status == "TERMINATED":
        if epochs_run >= study.epochs:
            return "completed"
        # The scheduler stops a trial only at one of its rungs; anywhere else Ctrl-C did.
        at_rung = epochs_run in study.asha_rungs() and completed is not False
        return "stopped_early" if at_rung else "interrupted"
    return "running" if trial.status in ("RUNNING", "PAUSED") or epochs else "pending"


def earlier_rows(csv_file: Path, this_round: int) -> pd.DataFrame:
    """The rows of a report table from the rounds before `this_round` (a table written before rounds
    existed is round 1)."""
    try:
        table = pd.read_csv(csv_file)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return pd.DataFrame()
    if "round" not in table:
        table.insert(1, "round", 1)
    return table[table["round"] < this_round]


def seed_runs(trial, epochs: dict[int, dict]) -> list[tuple]:
    """(trial, row id, seed, its epochs, group) for each seed a Ray trial trained: one for a lone trial
    (its own id, no group), one per seed for a seed group (hpo.trainable.SeedGroup: "<trial id>_s<seed>",
    the group's id, that seed's own metrics of each epoch over the group's shared keys: node, note)."""
    seeds = trial.config.get(GROUP_KEY)
    if not seeds:
        return [(trial, trial.trial_id, seed_of(trial.config), epochs, "")]
    runs = []
    for seed in seeds:
        own = {e: {**{k: v for k, v in r.items() if k not in ("seeds", "diverged")}, **r["seeds"][str(seed)]}
               for e, r in epochs.items() if str(seed) in (r.get("seeds") or {})}
        runs.append((trial, f"{trial.trial_id}_s{seed}", seed, own, trial.trial_id))
    return runs


def as_text_in_spreadsheets(value):
    """A text cell that a spreadsheet would read as a formula (= + - @, a tab or carriage return first: a
    config string from a study file, an error message) gets a leading apostrophe, as OWASP's "CSV
    injection" advice says; numbers, negative ones too, are not text and stay as they are."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class ReportWriter(tune.Callback):
    """Keeps the report of one study current while Ray Tune runs it."""

    def __init__(self, study: Study, study_dir: Path, experiment_path: str, meta: dict,
                 mirror: str | None = None):
        """`mirror`: a URI the report is copied to after every write (--storage s3://...)."""
        self.study, self.study_dir, self.experiment_path = study, Path(study_dir), experiment_path
        self.mirror = mirror
        self.meta = {**meta, "started": meta.get("started") or now(), "ended": None, "budget_ran_out": False}
        self.history: dict[str, dict[int, dict]] = {}
        self.trials: list = []
        self.last_write = 0.0
        self.completed: set[str] = set()  # trials Ray Tune completed in this run (finished or stopped early)
        self.final: dict[str, str] = {}  # outcomes an earlier run of this study reported as final (--resume)
        self.times: dict[str, list] = {}  # trial id -> [started, ended] (Unix time; ended None while running)
        self.start_time = time.time()
        self.utilisation: float | None = None  # trial-seconds / (slots x wall time), see write_study_json
        self.counts: dict[str, int] = {"total": 0, **dict.fromkeys(OUTCOMES, 0)}  # trials by outcome, as last written
        self.environment = {"versions": versions(), "hardware": hardware()}  # once: writes happen in Tune's loop
        self.round = int(meta.get("round") or 1)  # --extend: this run's round (hpo.rounds)
        self.earlier_rounds: list[dict] = []  # study.json's rounds before this one
        self.earlier = (pd.DataFrame(), pd.DataFrame())  # their rows of trials.csv and epochs.csv
        self.round_count = 0  # this round's trials, as last written

    @property
    def report_dir(self) -> Path:
        return self.study_dir / "report"

    def setup(self, **info):
        # Resuming: keep what the earlier run reported (nothing is found for a new experiment).
        self.history = read_result_files(self.experiment_path)
        self.final = earlier_final_outcomes(self.report_dir / "trials.csv",
                                            self.mirror and f"{self.mirror}/trials.csv")
        self.meta["ended"], self.meta["budget_ran_out"] = None, False
        recorded = self.read_earlier_rounds()
        if recorded != self.round:  # a resumed run keeps its report until it has news
            self.write_study_json()  # from the start: it records what this run was started with (--resume checks)

    def read_earlier_rounds(self) -> int | None:
        """Keep the rows and records of the rounds before this one (a --extend round pools them); returns
        the round study.json last recorded (None without one)."""
        from hpo.rounds import rounds_of

        try:
            record = json.loads((self.report_dir / "study.json").read_text())
        except (OSError, ValueError):
            return None
        self.earlier_rounds = [r for r in rounds_of(record) if r["round"] < self.round]
        if self.round > 1:
            self.earlier = tuple(earlier_rows(self.report_dir / name, self.round)
                                 for name in ("trials.csv", "epochs.csv"))
        return rounds_of(record)[-1]["round"]

    def on_trial_start(self, iteration, trials, trial, **info):
        self.times.setdefault(trial.trial_id, [time.time(), None])[1] = None  # a restart runs on

    def trial_ended(self, trial) -> None:
        self.times.setdefault(trial.trial_id, [time.time(), None])[1] = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.trials = trials
        if "error" in result:
            return  # a failure record (e.g. out of memory), not an epoch
        self.history.setdefault(trial.trial_id, {})[int(result["epoch"])] = dict(result)
        if time.monotonic() - self.last_write > 10:  # so a killed driver still leaves a recent report
            self.write()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.trials = trials
        self.completed.add(trial.trial_id)
        self.trial_ended(trial)
        self.write()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.trials = trials
        self.trial_ended(trial)
        self.write()

    def on_experiment_end(self, trials, **info):
        self.trials = trials
        self.meta["ended"] = now()
        # Ray Tune ends an experiment at its time budget as it does at Ctrl-C; this run lasting the whole
        # budget tells them apart (its clock started before Ray Tune's). --extend accepts such a round.
        budget = self.study.time_budget_min
        self.meta["budget_ran_out"] = bool(budget) and time.time() - self.start_time >= budget * 60
        self.write()

    # -- the files ----------------------------------------------------------
    def write(self) -> None:
        self.last_write = time.monotonic()
        self.report_dir.mkdir(parents=True, exist_ok=True)
        trials, epochs = self.tables()
        for name, frame in (("trials.csv", trials), ("epochs.csv", epochs)):
            text = frame.select_dtypes(include=["object", "str"]).columns
            safe = frame.assign(**{c: frame[c].map(as_text_in_spreadsheets) for c in text})
            self.replace(name, lambda tmp: safe.to_csv(tmp, index=False))
        counts = trials["outcome"].value_counts().to_dict() if len(trials) else {}
        self.counts = {"total": len(trials), **{k: int(counts.get(k, 0)) for k in OUTCOMES}}
        self.round_count = int((trials["round"] == self.round).sum()) if len(trials) else 0
        self.write_study_json()

    def write_study_json(self) -> None:
        self.report_dir.mkdir(parents=True, exist_ok=True)
        self.utilisation = self.slot_utilisation()
        this_round = {"round": self.round, **{k: self.meta.get(k) for k in ("command", "set", "started", "ended",
                                                                             "budget_ran_out")},
                      "planned_trials": self.meta.get("round_trials"),
                      "ray_trials": self.meta.get("round_ray_trials"),  # fewer where seeds train as groups
                      "trials": self.round_count,
                      "varied_keys": self.study.varied_keys(),
                      "study": self.study.to_json()}
        rounds = [*self.earlier_rounds, this_round]
        # Every key some round varied: the analysis tells configurations apart by them.
        varied = list(dict.fromkeys(k for r in rounds for k in r.get("varied_keys") or []))
        document = {"study": self.study.to_json(), "varied_keys": varied, "rounds": rounds, **self.meta,
                    "experiment_path": str(self.experiment_path), "trials": self.counts,
                    "slot_utilisation": self.utilisation, **self.environment}
        self.replace("study.json", lambda tmp: tmp.write_text(json.dumps(document, indent=2, default=str)))
        self.copy_to_mirror()

    def replace(self, name: str, write) -> None:
        """Write a report file through a temporary one: a reader never sees half a file, and a write
        that fails (a full disk) leaves the previous version."""
        tmp = self.report_dir / (name + ".tmp")
        try:
            write(tmp)
            os.replace(tmp, self.report_dir / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def copy_to_mirror(self) -> None:
        if self.mirror:
            try:
                storage.upload(self.report_dir, self.mirror)
            except OSError as e:  # storage briefly unreachable: the next write copies it again
                print(f"warning: could not copy the report to {self.mirror}: {e}", file=sys.stderr, flush=True)

    def slot_utilisation(self) -> float | None:
        """Trial-seconds over slots x wall time, for this run (None before a trial started)."""
        slots = self.meta.get("slots")
        if not slots or not self.times:
            return None
        now_ = time.time()
        busy = sum((end or now_) - start for start, end in self.times.values())
        return round(busy / (slots * max(now_ - self.start_time, 1e-9)), 3)

    def config_columns(self, config: dict) -> dict:
        config = {k: v for k, v in config.items() if not k.startswith("__")}
        config.setdefault("model", self.study.model)
        config.setdefault("dataset", self.study.dataset)
        return {f"config/{k}": v for k, v in config.items() if k != "seed"}

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        trial_rows, epoch_rows = [], []
        experiment = Path(self.experiment_path).name
        runs = [run for trial in sorted(self.trials, key=lambda t: t.trial_id)  # one order, also after --resume
                for run in seed_runs(trial, self.history.get(trial.trial_id, {}))]
        for trial, row_id, seed, epochs, group in runs:
            config = self.config_columns(trial.config)
            row = {"trial_id": row_id, "round": self.round, "group": group, "status": trial.status,
                   "outcome": self.final.get(row_id) or outcome(
                       trial, epochs, self.study, completed=trial.trial_id in self.completed),
                   **config, "seed": seed,
                   "epochs_run": len(epochs)}
            frame = pd.DataFrame([epochs[e] for e in sorted(epochs)])
            for metric in METRICS:
                values = frame[metric] if metric in frame else pd.Series(dtype=float)
                row[f"final_{metric}"] = values.iloc[-1] if len(values) else math.nan
                if metric != "lr":
                    best = values.max() if HIGHER_IS_BETTER[metric] else values.min()
                    row[f"best_{metric}"] = best if len(values) else math.nan
            row["best_epoch"], row["test_acc_at_best"], row["test_loss_at_best"] = self.best_epoch(frame)
            last = epochs[max(epochs)] if epochs else (trial.last_result or {})
            row["params"] = last.get("params", math.nan)
            row["time_s"] = frame["epoch_time_s"].sum() if "epoch_time_s" in frame else 0.0
            row["node"] = last.get("node", "")
            row["layout"] = last.get("layout", "")
            row["step"] = last.get("step", "")  # cuda_graph, eager, fused...: hpo.trainable.Trial.step_mode
            row["checkpoint"] = checkpoint_path(trial, experiment)
            row["note"] = " ".join(r["note"] for e, r in sorted(epochs.items()) if r.get("note"))
            started, ended = self.times.get(trial.trial_id, (None, None))
            row["started_s"] = round(started - self.start_time, 2) if started else math.nan  # since this run began
            row["ended_s"] = round(ended - self.start_time, 2) if ended else math.nan
            row["error"] = error_line(trial) if row["outcome"] in ("failed", "diverged") else ""
            if row["outcome"] == "diverged" and not row["error"]:
                row["error"] = f"diverged: train_loss became {last.get('train_loss')} at epoch {last.get('epoch')}"
            trial_rows.append(row)
            for e in sorted(epochs):
                result = epochs[e]
                epoch_rows.append({"trial_id": row_id, "round": self.round, "group": group, "seed": seed, **config,
                                   "epoch": e, **{m: result.get(m, math.nan) for m in METRICS}})
        earlier_trials, earlier_epochs = self.earlier
        return (pd.concat([earlier_trials, pd.DataFrame(trial_rows)], ignore_index=True),
                pd.concat([earlier_epochs, pd.DataFrame(epoch_rows)], ignore_index=True))

    def best_epoch(self, frame: pd.DataFrame):
        metric = self.study.primary_metric
        if metric not in frame or frame[metric].isna().all():
            return math.nan, math.nan, math.nan
        i = frame[metric].idxmax() if self.study.primary_mode == "max" else frame[metric].idxmin()
        best = frame.loc[i]
        return int(best["epoch"]), best.get("test_acc", math.nan), best.get("test_loss", math.nan)


class LiveReport(tune.Callback):
    """While a study runs, `python -m analysis --live` rewrites report.html about every `every_s`
    seconds in its own process (the trials are not slowed): tables and learning curves so far, a
    banner, a page that reloads itself. The final analysis replaces it."""

    def __init__(self, study_dir: Path, every_s: float = 60.0):
        self.study_dir, self.every_s = Path(study_dir), every_s
        self.process = None
        self.last = time.monotonic()  # the first after every_s: nothing to show at the very start

    def on_step_end(self, iteration, trials, **info):
        busy = self.process is not None and self.process.poll() is None
        if busy or time.monotonic() - self.last < self.every_s:
            return
        if not (self.study_dir / "report" / "trials.csv").exists():
            return
        import subprocess
        self.last = time.monotonic()
        self.process = subprocess.Popen([sys.executable, "-m", "analysis", str(self.study_dir), "--live"],
                                        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL,
                                        start_new_session=True)  # a signal to hpo.run's group is the driver's

    def on_experiment_end(self, trials, **info):
        self.stop()

    def stop(self) -> None:
        """Before the final analysis: a live one still writing would race it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()
        self.process = None

    def __getstate__(self):  # Tuner pickles its callbacks (tuner.pkl); a process is not state
        return {**self.__dict__, "process": None}
