"""--extend: a finished study grows in its own folder, one round at a time.

Round 1 is the study as first run: Ray's experiment in <study>/experiment. Each `--extend` is a round of its
own, a Ray experiment in <study>/experiment-round<N> (so a `--resume` of an interrupted round works as for
any run), that trains only what no earlier round trained: the configurations x seeds of the (edited) study
that no earlier trial has (a seed-grouped study's as one seed group per configuration: seed_groups); a search
(Optuna's TPE or random sampler) also draws new configurations up to its `num_samples`, continuing the
Optuna study in the study folder's journal (hpo.searchers.PointsFirst runs the fixed ones first). The report
pools every round (trials.csv's and epochs.csv's `round` column, study.json's `rounds`), and the analysis
compares configurations over all their seeds.
"""

from __future__ import annotations

import io
import json
import shlex
from dataclasses import dataclass
from datetime import datetime

from hpo import storage
from hpo.errors import HpoError
from hpo.registry import EPOCHS_KEY, GROUP_KEY, SCHEDULERS, SEARCHES, has_grid
from hpo.study import FINAL, Study, seed_of

# What makes pooled results incomparable: a change of any of these refuses --extend (another study).
FIXED_FIELDS = ("dataset", "model", "epochs", "metric", "mode", "search", "scheduler", "grace_period",
                "reduction_factor")


def experiment_name(number: int) -> str:
    """Ray's experiment folder of a round, inside the study folder."""
    return "experiment" if number == 1 else f"experiment-round{number}"


def rounds_of(record: dict) -> list[dict]:
    """study.json's rounds, oldest first; a study.json written before rounds existed is one round."""
    if record.get("rounds"):
        return list(record["rounds"])
    ran_out = {"budget_ran_out": record["budget_ran_out"]} if "budget_ran_out" in record else {}  # else inferred
    return [{"round": 1, **{k: record.get(k) for k in ("command", "set", "started", "ended", "study")}, **ran_out}]


RUN_FLAGS = ("--extend", "--resume", "--overwrite")
ROUND_OPTIONS = ("--top",)  # what one --extend round trains, with its value: not for the next command


def command_with(command: str, flag: str | None = None, sets: dict | None = None) -> str:
    """A run's command (study.json's) turned into another: its --extend/--resume/--overwrite (and a --top
    N) replaced by `flag`, and `--set KEY=VALUE` for each of `sets` in place of the same key's earlier value."""
    sets = sets or {}
    words, kept = shlex.split(command), []
    i = 0
    while i < len(words):
        if words[i] in RUN_FLAGS:
            i += 1
        elif words[i] in ROUND_OPTIONS:
            i += 2
        elif words[i] == "--set" and i + 1 < len(words) and words[i + 1].partition("=")[0] in sets:
            i += 2
        else:
            kept.append(words[i])
            i += 1
    at = next((i + 1 for i, w in enumerate(kept) if w.endswith(".py")), len(kept))  # after the study file
    kept[at:at] = flag.split() if flag else []  # e.g. "--extend --top 3"
    return shlex.join([*kept, *(a for key, value in sets.items() for a in ("--set", f"{key}={value}"))])


def top_of(command: str) -> int | None:
    """The N of a round's `--top N` (what it trained: the missing seeds of the N best configurations)."""
    words = shlex.split(command or "")
    at = words.index("--top") + 1 if "--top" in words else len(words)
    return int(words[at]) if at < len(words) else None


def resume_command(command: str) -> str:
    """The command that continues a run started with `command` (its --extend becomes --resume)."""
    return command_with(command, "--resume")


def latest_round(storage_path: str) -> tuple[int, int, dict]:
    """The latest round of the study in `storage_path` (what a --resume continues): its number, the trials
    planned in the rounds before it, and its study.json record (planned_trials, ray_trials, command: {} for
    round 1, or where unknown)."""
    try:
        record = json.loads(storage.read_text(f"{storage_path}/report/study.json") or "{}")
    except ValueError:
        return 1, 0, {}  # hpo.studydir.check_resumable says what is wrong with it
    latest = rounds_of(record)[-1] if record else {"round": 1}
    if latest["round"] == 1:
        return 1, 0, {}
    planned = latest.get("planned_trials")
    return latest["round"], int(record.get("planned_trials") or 0) - int(planned or 0), latest


@dataclass(frozen=True)
class Extension:
    """The round a --extend adds: its number, the configurations (each with its `seed`) it trains, and for
    a sampled search the new configurations its searcher draws (each with every seed)."""

    number: int
    points: tuple[dict, ...]
    earlier_trials: int  # trials of the rounds before it
    new_configs: int = 0

    def trials(self, seeds: int) -> int:
        return len(self.points) + self.new_configs * seeds


def configurations(study: Study) -> list[dict]:
    """Every configuration x seed of a grid study, resolved by Ray's own variant generator (grids, and
    values that follow a grid key, as `hpo.variants` makes them); a seed group's seeds one by one."""
    from ray.tune.search.variant_generator import generate_variants

    from hpo.registry import seeded_space

    configs = [config for _, config in generate_variants(seeded_space(study))]
    return [{**{k: v for k, v in c.items() if k != GROUP_KEY}, "seed": seed} if GROUP_KEY in c else c
            for c in configs for seed in (c.get(GROUP_KEY) or [None])]


def without_seed(config: dict) -> dict:
    """A trial config's configuration: without its seed and Ray's own keys (a repeat index, a seed group)."""
    return {k: v for k, v in config.items() if k != "seed" and not k.startswith("__")}


def seed_groups(points) -> list[dict]:
    """A round's points (one per configuration and seed) as seed groups (hpo.trainable.SeedGroup): one per
    configuration, with the list of its missing seeds, in the order the points came."""
    groups: dict[str, dict] = {}
    for point in points:
        group = groups.setdefault(configuration(point), {**{k: v for k, v in point.items() if k != "seed"},
                                                        GROUP_KEY: []})
        group[GROUP_KEY].append(seed_of(point))
    return list(groups.values())


def configuration(config: dict) -> str:
    """A trial config without its seed, as comparable text (JSON, as Ray's params.json holds it)."""
    return json.dumps(without_seed(config), sort_keys=True, default=str)


def _trial_configs(storage_path: str, rounds: int) -> list[tuple[str, dict]]:
    """(folder name, config) of every Ray trial of rounds 1..`rounds`: Ray's params.json in each trial folder."""
    found = []
    for number in range(1, rounds + 1):
        for trial_dir in storage.subfolders(f"{storage_path}/{experiment_name(number)}"):
            text = storage.read_text(f"{trial_dir}/params.json")
            if text:
                found.append((trial_dir.rstrip("/").rpartition("/")[2], json.loads(text)))
    return found


def trained(storage_path: str, rounds: int) -> list[dict]:
    """The configs of every trial of rounds 1..`rounds`, one per seed (a seed group trained each of its seeds)."""
    found = []
    for _, config in _trial_configs(storage_path, rounds):
        seeds = config.pop(GROUP_KEY, None)
        found += [{**config, "seed": seed} for seed in seeds] if seeds else [config]
    return found


def _finished_trials(storage_path: str, rounds: int):
    """trials.csv's trials of rounds 1..`rounds` that ended (completed, stopped early, diverged), each with
    `key`, its configuration (`configuration` text) from its Ray trial folder's params.json."""
    import pandas as pd

    text = storage.read_text(f"{storage_path}/report/trials.csv")
    table = pd.read_csv(io.StringIO(text or "trial_id,outcome\n"), dtype={"trial_id": str, "group": str})
    done = table[table["outcome"].isin(["completed", "stopped_early", "diverged"])]
    ray_ids = done["group"].fillna(done["trial_id"]) if "group" in done else done["trial_id"]
    # Ray names a trial's folder <trainable>_<trial id>_<tag>_<date>: its trial id between underscores
    folders = {name: configuration(config) for name, config in _trial_configs(storage_path, rounds)}
    keys = [next((key for name, key in folders.items() if f"_{ray_id}_" in f"{name}_"), None) for ray_id in ray_ids]
    return done.assign(key=keys).dropna(subset=["key"])


def best_configurations(storage_path: str, rounds: int, study: Study, top: int) -> list[str]:
    """The `top` best configurations (`configuration` text) among those with a trial that ran every epoch
    (trials.csv's `completed`), by the mean of `best_<metric>` over those trials. A configuration ASHA stopped
    is not among them: its seeds could not be compared with ones that ran every epoch."""
    metric, mode = study.primary_metric, study.primary_mode
    finished = _finished_trials(storage_path, rounds)
    if f"best_{metric}" not in finished:
        return []
    done = finished[(finished["outcome"] == "completed") & finished[f"best_{metric}"].notna()]
    means = done.groupby("key")[f"best_{metric}"].mean()
    return list(means.sort_values(ascending=mode == "min", kind="stable").index[:top])


def epochs_reached(storage_path: str, rounds: int) -> dict[str, int]:
    """The epochs each configuration (`configuration` text) trained in rounds 1..`rounds`: the most any of its
    trials that completed or that ASHA stopped ran (a diverged seed ended by itself: not a judgement of it)."""
    finished = _finished_trials(storage_path, rounds)
    if "epochs_run" not in finished:
        return {}
    judged = finished[finished["outcome"].isin(["completed", "stopped_early"])]
    return {key: int(n) for key, n in judged.groupby("key")["epochs_run"].max().items()} if len(judged) else {}


def plan_extension(study: Study, storage_path: str, record_now: dict, top: int | None = None) -> Extension:
    """What a --extend of the study in `storage_path` trains, or an HpoError (exit 2) that says why it
    cannot: no finished study there, a round not finished, a change that would mix two studies, a search
    this version cannot continue, nothing new to train. `top`: only the missing seeds of that many best
    configurations (best_configurations), no new ones. Reads the study folder; writes nothing."""
    text = storage.read_text(f"{storage_path}/report/study.json")
    if text is None:
        raise HpoError(f"--extend: there is no study '{study.name}' in {storage_path} to extend (no "
                       "report/study.json). Run it first without --extend.")
    try:
        record = json.loads(text)
    except ValueError as e:
        raise HpoError(f"--extend: {storage_path}/report/study.json cannot be read ({e}).") from None
    rounds = rounds_of(record)
    last = rounds[-1]["round"]
    unfinished = _unfinished_trials(storage_path, last)
    # A round its time budget ended is finished as far as it goes: its cut trials stay as they are.
    if record.get("ended") is None or (unfinished and not budget_ran_out(rounds[-1])):
        why = f"{unfinished} of its trials are not finished" if unfinished else "it did not run to its end"
        raise HpoError(f"--extend: round {last} of study '{study.name}' is not finished ({why}). Continue it "
                       f"first with: {resume_command(record.get('command') or 'python -m hpo.run STUDY.py')}")
    differences = []
    then = record.get("study", {})
    for key in FIXED_FIELDS:
        if json.dumps(then.get(key), default=str) != json.dumps(record_now["study"].get(key), default=str):
            differences.append(f"{key} was {then.get(key)!r}, now {record_now['study'].get(key)!r}")
    if bool(record.get("smoke")) != record_now["smoke"]:
        differences.append(f"--smoke was {'on' if record.get('smoke') else 'off'}, now "
                           f"{'on' if record_now['smoke'] else 'off'}")
    for key in ("train_images", "test_images"):
        was, now = (record.get("data") or {}).get(key), (record_now.get("data") or {}).get(key)
        if was and now and was != now:
            differences.append(f"the dataset's {key.replace('_', ' ')} were {was}, now {now}")
    if differences:
        raise HpoError(f"--extend: the results of study '{study.name}' could not be pooled with this run's, "
                       f"which differs in what makes them comparable: {'; '.join(differences)}. Extend it with "
                       "the same settings (only seeds, num_samples, the space and time_budget_min may change), "
                       "or give the new study another name.")
    earlier = trained(storage_path, last)
    done = {(configuration(c), seed_of(c)) for c in earlier}
    if not SEARCHES[study.search].samples:  # a grid: every configuration x seed it now has
        points = tuple(c for c in configurations(study) if (configuration(c), seed_of(c)) not in done)
        new_configs = 0
    elif has_grid(study.space):
        raise HpoError(f"--extend: study '{study.name}' draws random values inside a grid (search="
                       f"{study.search!r} with tune.grid_search), which Ray's generator cannot continue. Run the "
                       "larger study as a new study (another name, or --overwrite).")
    else:  # a search: the missing seeds of the configurations it drew, and new ones up to num_samples
        drawn = {configuration(c): without_seed(c) for c in earlier}
        points = tuple({**config, "seed": seed} for key, config in drawn.items() for seed in range(study.seeds)
                       if (key, seed) not in done)
        new_configs = max(0, study.num_samples - len(drawn))
    if top is None and SCHEDULERS[study.scheduler].stops_early:
        # The new seeds of a configuration ASHA judged in an earlier round train as many epochs as its earlier
        # seeds did (ASHA leaves them alone: hpo.searchers.AshaBesideFixedEpochs), not a new ASHA's verdict.
        reached = epochs_reached(storage_path, last)
        points = tuple({**c, EPOCHS_KEY: reached[configuration(c)]} if configuration(c) in reached else c
                       for c in points)
    if top is not None:
        best = best_configurations(storage_path, last, study, top)
        if not best:
            raise HpoError(f"--extend --top: no configuration of study '{study.name}' ran every epoch (ASHA or "
                           "the time budget stopped them all), so none can be ranked for more seeds.")
        points = tuple(c for c in points if configuration(c) in best)
        new_configs = 0
    if not points and not new_configs:
        if top is not None:
            raise HpoError(f"--extend --top {top}: nothing to add: the {len(best)} best configurations of study "
                           f"'{study.name}' have seeds 0-{study.seeds - 1}. Ask for more, e.g. --set "
                           f"seeds={study.seeds + 2}.")
        more = (f"seeds={study.seeds + 2}, or add grid values to the space" if not SEARCHES[study.search].samples
                else f"num_samples={study.num_samples * 2} (the total number of configurations), or "
                     f"seeds={study.seeds + 2}")
        raise HpoError(f"--extend: nothing to add: rounds 1-{last} of study '{study.name}' trained every "
                       f"configuration with seeds 0-{study.seeds - 1}. Ask for more, e.g. --set {more}.")
    return Extension(number=last + 1, points=points, earlier_trials=len(earlier), new_configs=new_configs)


def budget_ran_out(round_record: dict) -> bool:
    """The round's time budget ended it (study.json's `budget_ran_out`; for a study.json written before that
    key, the round lasted its whole budget)."""
    if "budget_ran_out" in round_record:
        return bool(round_record["budget_ran_out"])
    budget = (round_record.get("study") or {}).get("time_budget_min")
    started, ended = round_record.get("started"), round_record.get("ended")
    if not (budget and started and ended):
        return False
    return (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds() >= budget * 60


def _unfinished_trials(storage_path: str, round_number: int) -> int:
    """Trials of a round whose outcome is not final (running, pending, interrupted)."""
    import pandas as pd

    text = storage.read_text(f"{storage_path}/report/trials.csv")
    if not text:
        return 0
    table = pd.read_csv(io.StringIO(text), dtype=str)
    if "round" in table:  # a trials.csv written before rounds existed is round 1
        table = table[table["round"].astype(float) == round_number]
    return int((~table["outcome"].isin(FINAL)).sum())
