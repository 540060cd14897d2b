"""What a run of a study is: the command line's options (RunOptions) and the checked study with its folders
and round (Plan), as hpo.run.plan makes it. Read by hpo.run, which runs it, and hpo.studydir, which prepares,
checks and moves its folder."""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from hpo.rounds import experiment_name, seed_groups
from hpo.study import RunSettings, Study


@dataclass(frozen=True)
class RunOptions:
    """How to run a study: what the command line says (docs/running.md)."""

    study_file: str
    results: str = "results"
    data_dir: str | None = None
    smoke: bool = False
    resume: bool = False
    overwrite: bool = False
    extend: bool = False  # a new round of a finished study (hpo.rounds)
    top: int | None = None  # that round: only the missing seeds of the N best configurations, every epoch
    address: str | None = None
    storage: str | None = None
    gpus_per_trial: float | None = None  # None: 0.25 where the cluster has GPUs, else 0
    cpus_per_trial: float = 1
    max_concurrent: int | None = None
    max_failures: int = 2
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE
    analysis: bool = True
    verbose: bool = False  # a line per epoch of every trial instead of the live status
    trackers: tuple[str, ...] = ()  # --log mlflow / wandb (hpo.registry.TRACKERS)
    live_report_s: float = 60  # rewrite report.html this often while the study runs (0: never)

    @property
    def cluster_address(self) -> str | None:
        return self.address or os.environ.get("RAY_ADDRESS")

    @property
    def address_source(self) -> str:
        """Where cluster_address came from, for messages."""
        return "--address" if self.address else "$RAY_ADDRESS in the environment"

    def command(self, resume: bool = False) -> str:
        """The command line that runs (or, with resume, continues) this study, quoted for a shell."""
        options = ["--results", self.results] if self.results != "results" else []
        options += ["--storage", self.storage] if self.storage else []
        options += ["--address", self.address] if self.address else []
        options += ["--data-dir", self.data_dir] if self.data_dir else []
        options += [a for s in self.overrides for a in ("--set", s)] + (["--smoke"] if self.smoke else [])
        options += [a for t in self.trackers for a in ("--log", t)]
        # what a trial gets: a resume without them would pack trials differently onto the GPUs
        options += ["--cpus-per-trial", f"{self.cpus_per_trial:g}"] if self.cpus_per_trial != 1 else []
        options += ["--gpus-per-trial", f"{self.gpus_per_trial:g}"] if self.gpus_per_trial is not None else []
        options += ["--max-concurrent", str(self.max_concurrent)] if self.max_concurrent is not None else []
        options += ["--max-failures", str(self.max_failures)] if self.max_failures != 2 else []
        flag = ["--resume"] if resume else ["--extend"] if self.extend else []
        flag += ["--top", str(self.top)] if self.top is not None and not resume else []  # restore knows it
        return shlex.join(["python", "-m", "hpo.run", self.study_file, *flag, *options])


@dataclass(frozen=True)
class Plan:
    """A study ready to run: checked, with its folders and what every trial shares."""

    study: Study
    options: RunOptions
    study_dir: Path  # the report is written here (<results>/<name>, or <storage>/<name> for a path)
    storage_path: str  # Ray Tune keeps the experiment in <storage_path>/experiment (a path or a URI)
    settings: RunSettings
    data: dict = dataclasses.field(default_factory=dict)  # what was read: dataset, folder, images per split
    slots: int | None = None  # trials that fit at once (set by execute once Ray runs: trial_slots)
    round: int = 1  # the study's rounds: 1, then one more per --extend (hpo.rounds)
    points: tuple[dict, ...] = ()  # a --extend round: the configurations (with seed) it trains
    new_configs: int = 0  # and the new configurations its search draws (hpo.rounds.Extension)
    earlier_trials: int = 0  # trials of the rounds before this one
    round_trials: int | None = None  # the trials of a round after the first (None: the study's)
    round_ray_trials: int | None = None  # and its Ray trials, for a resumed round (study.json's)

    @property
    def experiment_path(self) -> str:
        return f"{self.storage_path}/{experiment_name(self.round)}"

    @property
    def planned_trials(self) -> int:
        """The trials this run will have, one per configuration and seed (the report's rows)."""
        return self.study.num_trials() if self.round_trials is None else self.round_trials

    @property
    def ray_trials(self) -> int:
        """Ray Tune's trials of this run: fewer than planned_trials where seeds train as groups."""
        if self.round == 1:
            return self.study.ray_trials()
        if self.points or self.new_configs:
            grouped = self.study.seed_grouped
            points = len(seed_groups(self.points)) if grouped else len(self.points)
            return points + self.new_configs * (1 if grouped else self.study.seeds)
        return self.round_ray_trials or self.planned_trials  # a resumed round's (an older study.json: its rows)

    @property
    def lock_path(self) -> Path:
        return self.study_dir.parent / f".{self.study.name}.lock"

    def record(self) -> dict:
        """What this run was started with: a --resume must be started with the same (study.json)."""
        study = {k: v for k, v in self.study.to_json().items() if k != "description"}
        return {"study": study, "smoke": self.options.smoke,
                "data": {k: self.data.get(k) for k in ("dataset", "train_images", "test_images")}}
