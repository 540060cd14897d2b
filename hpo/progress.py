"""What a running study shows: a compact live status, or one line per epoch with --verbose.

On a terminal the status is redrawn in place (rich's Live display); where the output is not a terminal
(`ray job logs`, CI, a file) it is a plain summary line at most every `interval_s` seconds and whenever
a trial ends. A Ray Tune callback in the driver, beside the report writer.
"""

from __future__ import annotations

import math
import sys
import time

from ray import tune

from hpo.study import OUTCOMES, Study


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4f}"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class ProgressView(tune.Callback):
    def __init__(self, study: Study, verbose: bool = False, interval_s: float = 10.0, stream=None,
                 live: bool | None = None, planned: int | None = None):
        """`planned`: the trials this run will have (default: the study's; a --extend round's are fewer)."""
        self.study, self.verbose, self.interval_s = study, verbose, interval_s
        self.planned = study.num_trials() if planned is None else planned
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.start = time.monotonic()
        self.last_line = -math.inf
        self.epochs_done = 0
        self.best: tuple[float, dict] | None = None  # (value, config)
        self.latest: dict[str, dict] = {}  # trial id -> its last result
        self.completed: set[str] = set()  # trials Ray Tune completed (finished, or stopped by the scheduler)
        self.trials: list = []
        self.display = None

    # -- Ray Tune's events --------------------------------------------------
    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.trials = trials
        if "error" in result:
            return
        self.epochs_done += 1
        self.latest[trial.trial_id] = result
        if result.get("note"):  # e.g. the damaged-checkpoint fallback (hpo.checkpoints.load_newest_readable)
            self.say(f"trial {trial.trial_id}: {result['note']}")
        value = result.get(self.study.primary_metric)
        if value is not None and math.isfinite(value):
            better = (value > self.best[0]) if self.best and self.study.primary_mode == "max" else \
                (value < self.best[0]) if self.best else True
            if better:
                self.best = (value, {k: v for k, v in trial.config.items() if not k.startswith("__")})
        if self.verbose:
            done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
            print(f"[{done}/{self.total(trials)} trials done] {trial.trial_id} epoch {result['epoch']}/"
                  f"{self.study.epochs}  {self.study.primary_metric} {fmt(value)}  "
                  f"best {fmt(self.best and self.best[0])}"
                  f"  ({result.get('epoch_time_s', 0):.1f} s/epoch)", file=self.stream, flush=True)
        else:
            self.show()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.trials = trials
        self.completed.add(trial.trial_id)
        self.show(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        from hpo.report import error_line

        self.trials = trials
        self.say(f"trial {trial.trial_id} failed: {error_line(trial)}")
        self.show(force=True)

    def say(self, message: str) -> None:
        """A line above the live status (a trial's workers' own output is not forwarded)."""
        if self.display is not None:
            self.display.console.print(message)
        else:
            print(message, file=self.stream, flush=True)

    def on_experiment_end(self, trials, **info):
        self.trials = trials
        if self.display is not None:
            self.display.update(self.render())
        elif not self.verbose:
            self.show(force=True)
        self.close()

    def close(self) -> None:
        """Give the terminal back (also when a second Ctrl-C ends the run without on_experiment_end)."""
        if self.display is not None:
            self.display.stop()
            self.display = None

    # -- what is shown ------------------------------------------------------
    def total(self, trials) -> int:
        return max(len(trials), self.planned)  # searchers create trials as they go

    def counts(self) -> dict[str, int]:
        """Trials by outcome, by the report's own rule (hpo.report.outcome); diverged and interrupted
        only where there are some."""
        from hpo.report import outcome

        found = dict.fromkeys(OUTCOMES, 0)
        for t in self.trials:
            last = self.latest.get(t.trial_id) or t.last_result or {}
            epochs = {last["epoch"]: last} if last.get("epoch") else {}
            found[outcome(t, epochs, self.study, completed=t.trial_id in self.completed)] += 1
        found["pending"] += self.total(self.trials) - len(self.trials)  # a searcher's trials still to come
        shown = {"finished": found["completed"], "stopped early": found["stopped_early"],
                 "diverged": found["diverged"], "failed": found["failed"], "interrupted": found["interrupted"],
                 "running": found["running"], "pending": found["pending"]}
        return {k: n for k, n in shown.items() if n or k not in ("diverged", "interrupted")}

    def eta_s(self) -> float | None:
        elapsed = time.monotonic() - self.start
        if self.study.time_budget_min:
            return max(0.0, self.study.time_budget_min * 60 - elapsed)
        planned = self.total(self.trials) * self.study.epochs  # an upper bound: ASHA stops some early
        return elapsed / self.epochs_done * (planned - self.epochs_done) if self.epochs_done else None

    def summary(self) -> str:
        counts = " ".join(f"{n} {name}" for name, n in self.counts().items())
        if self.study.seed_grouped:  # Ray trials: the report's rows are seeds, the first line counted them
            counts = f"seed groups: {counts}"
        best = f"best {self.study.primary_metric} {fmt(self.best[0])}" if self.best else "no result yet"
        elapsed = duration(time.monotonic() - self.start)
        return (f"{counts} | {self.epochs_done} epoch{'s' * (self.epochs_done != 1)} | {elapsed} elapsed, "
                f"ETA {duration(self.eta_s())} | {best}")

    def running_lines(self) -> list[str]:
        lines = []
        for t in sorted(self.trials, key=lambda t: t.trial_id):
            if t.status == "RUNNING":
                last = self.latest.get(t.trial_id, {})
                lines.append(f"  {t.trial_id}  epoch {last.get('epoch', 0)}/{self.study.epochs}  "
                             f"{self.study.primary_metric} {fmt(last.get(self.study.primary_metric))}")
        return lines

    def render(self):
        from rich.text import Text
        best = ("  best config: " + ", ".join(f"{k}={v}" for k, v in self.best[1].items())) if self.best else ""
        return Text("\n".join([self.summary(), *([best] if best else []), *self.running_lines()]))

    def show(self, force: bool = False) -> None:
        if self.live:
            if self.display is None:
                from rich.console import Console
                from rich.live import Live
                self.display = Live(self.render(), console=Console(file=self.stream), auto_refresh=False,
                                    transient=False)
                self.display.start()
            self.display.update(self.render(), refresh=True)
        elif force or time.monotonic() - self.last_line >= self.interval_s:
            self.last_line = time.monotonic()
            print(self.summary(), file=self.stream, flush=True)
