"""python -m hpo.run STUDY.py [options]: run a study as a Ray Tune experiment.

Locally it starts an embedded Ray on 127.0.0.1; with --address (or inside
`ray job submit`) it joins that cluster. Results: <results>/<study>/experiment
(Ray's experiment directory) and <results>/<study>/report (see docs/report-format.md).

As a library: `plan(RunOptions(...))` loads and checks everything (it may
download or cache the data, never touches the study folder), `execute(plan)`
runs it; `build_tuner(plan, trainable, callbacks)` is the Ray Tune set-up
alone (bench/ uses it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import runpy
import shlex
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from hpo import env, storage, studydir
from hpo.errors import HpoError
from hpo.plan import Plan, RunOptions
from hpo.registry import EPOCHS_KEY, GROUP_KEY
from hpo.rounds import experiment_name, seed_groups
from hpo.study import (FINAL, SMOKE_EPOCHS, SMOKE_EVAL, SMOKE_FLOPS, SMOKE_TRAIN, SMOKE_TRIALS,
                       TRAINABLE_KEYS, RunSettings, Study, parse_overrides, possible_values)


def parse_args(argv=None) -> RunOptions:
    from hpo.registry import SCHEDULERS, SEARCHES, TRACKERS

    def listing(title, registry):
        return f"{title}:\n" + "\n".join(f"  {name:8s} {choice.description}" for name, choice in registry.items())

    p = argparse.ArgumentParser(prog="python -m hpo.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join([listing("a study's search=", SEARCHES),
                                                     listing("a study's scheduler=", SCHEDULERS),
                                                     listing("--log", TRACKERS)]))
    p.add_argument("study", help="a study file, e.g. studies/mnist_batchsize.py")
    p.add_argument("--results", default="results", help="where results go (default ./results)")
    p.add_argument("--data-dir", help="where datasets are looked up first")
    p.add_argument("--smoke", action="store_true",
                   help=f"quick check: at most {SMOKE_EPOCHS} epochs, {SMOKE_TRIALS} trials, "
                        f"{SMOKE_TRAIN} training and {SMOKE_EVAL} validation/test images per trial")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study (Tuner.restore)")
    p.add_argument("--overwrite", action="store_true", help="delete the study's earlier results first")
    p.add_argument("--extend", action="store_true",
                   help="a finished study: train what it lacks after --set seeds=N, --set num_samples=N (a "
                        "search continues) or new grid values, in the same folder, and pool everything in one "
                        "report (docs/running.md)")
    p.add_argument("--top", type=int, metavar="N",
                   help="with --extend: only the missing seeds of the N best configurations that ran every "
                        "epoch, each to the last epoch (no early stopping, no new configurations)")
    p.add_argument("--address", help="join a running Ray cluster (e.g. 127.0.0.1:6379 or auto)")
    p.add_argument("--storage", help="shared storage for a cluster: a path every node sees, or s3://...")
    p.add_argument("--gpus-per-trial", type=float,
                   help="GPUs per trial; fractions pack trials onto one GPU (default 0.25 where GPUs exist, else 0)")
    p.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs per trial (default 1)")
    p.add_argument("--max-concurrent", type=int,
                   help="at most this many trials at once (default: as many as fit; 0: Ray Tune's own default)")
    p.add_argument("--max-failures", type=int, default=2,
                   help="retries of a trial that fails (a lost node, a crash) from its last checkpoint (default 2)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a study field or a space key, e.g. --set dataset=fashion_mnist --set epochs=3")
    p.add_argument("--no-analysis", action="store_true", help="skip python -m analysis at the end")
    p.add_argument("--log", action="append", default=[], metavar="TRACKER",
                   help="also log every trial to a tracker: mlflow or wandb (optional extras: uv sync --extra NAME)")
    p.add_argument("--live-report", type=float, default=60, metavar="SECONDS",
                   help="rewrite report.html about this often while the study runs (default 60; 0: not at all)")
    p.add_argument("--verbose", action="store_true",
                   help="print a line per epoch of every trial instead of the live status")
    a = p.parse_args(argv)
    return RunOptions(study_file=a.study, results=a.results, data_dir=a.data_dir, smoke=a.smoke, resume=a.resume,
                      overwrite=a.overwrite, extend=a.extend, top=a.top, address=a.address, storage=a.storage,
                      gpus_per_trial=a.gpus_per_trial, cpus_per_trial=a.cpus_per_trial, max_concurrent=a.max_concurrent,
                      max_failures=a.max_failures, overrides=tuple(a.set), analysis=not a.no_analysis,
                      verbose=a.verbose, trackers=tuple(a.log),
                      live_report_s=a.live_report)


def load_study(path: str):
    """Execute a study file and return its `study` (an hpo.Study)."""
    file = Path(path)
    if not file.is_file():
        raise HpoError(f"Study file {path} does not exist. Study files live in studies/, e.g. "
                       "studies/mnist_batchsize.py.")
    try:
        namespace = runpy.run_path(str(file))
    except SyntaxError as e:
        raise HpoError(f"{path}, line {e.lineno}: syntax error: {e.msg}.\n    {(e.text or '').strip()}") from None
    except HpoError as e:
        raise HpoError(f"{path}: {e}") from None
    except Exception as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve() == file.resolve()]
        where = f", line {frames[-1].lineno}" if frames else ""
        raise HpoError(f"{path}{where}: {type(e).__name__}: {e}") from None
    study = namespace.get("study")
    if study is None:
        raise HpoError(f"{path} defines no variable named 'study'. A study file ends with "
                       "`study = Study(name=..., dataset=..., model=..., space={...})`.")
    if not isinstance(study, Study):
        raise HpoError(f"{path}: 'study' is a {type(study).__name__}, not an hpo.Study.")
    if not study.description and namespace.get("__doc__"):
        study.description = namespace["__doc__"].strip()
    return study


def in_ray_job() -> bool:
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ  # set by Ray for the entrypoint of `ray job submit`


def check_job_paths(options: RunOptions) -> None:
    """Inside `ray job submit` the working directory is a temporary copy of the project (Ray's runtime
    environment): results written there would be lost with it."""
    if not in_ray_job():
        return
    target = options.storage or options.results
    if not storage.is_uri(target) and not Path(target).is_absolute():
        raise HpoError(f"This study runs inside `ray job submit`, whose working directory is a temporary copy of "
                       f"the project: results in {target}/ would be lost. Pass --storage with an absolute path on "
                       f"a file system every node shares (e.g. --storage /shared/hpo), or a URI (s3://..., gs://...).")


def check_results_root(root: Path, flag: str) -> None:
    """The folder the study's folder goes in: a writable folder, or one that can be made."""
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir():
        raise HpoError(f"{flag} {root}: {existing} is a file, not a folder. Give a folder for the results.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise HpoError(f"{flag} {root}: {existing} is not writable. Give a folder you can write to.")


def check_local_resources(options: RunOptions) -> None:
    """A trial asking for more than this machine has would wait forever: say so before anything starts."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if options.cpus_per_trial <= 0 or options.cpus_per_trial > cpus:
        raise HpoError(f"--cpus-per-trial {options.cpus_per_trial:g}: this machine has {cpus} CPUs; give a number "
                       f"in (0, {cpus}] (fractions pack several trials onto one CPU).")
    if options.gpus_per_trial:
        import torch
        gpus = torch.cuda.device_count()
        if options.gpus_per_trial < 0 or options.gpus_per_trial > gpus:
            raise HpoError(f"--gpus-per-trial {options.gpus_per_trial:g}: this machine has {gpus} GPUs; give a "
                           f"number in [0, {gpus}]" + (" (fractions pack several trials onto one GPU)." if gpus
                                                       else ", or leave it out."))


def check_splits(study: Study, train_images: int, max_train: int | None) -> None:
    """Every val_fraction and batch size the space can ask for leaves trials something to train on."""
    for fraction in possible_values(study.space.get("val_fraction", TRAINABLE_KEYS["val_fraction"][0])) or []:
        n_val = round(train_images * fraction)
        n_train = min(train_images - n_val, max_train or train_images)
        if not 0 < n_val < train_images:
            raise HpoError(f"Study '{study.name}': val_fraction {fraction:g} of {train_images} training images "
                           f"leaves an empty {'validation' if n_val == 0 else 'training'} split.")
        for batch in possible_values(study.space.get("batch_size", TRAINABLE_KEYS["batch_size"][0])) or []:
            if batch > n_train:
                raise HpoError(f"Study '{study.name}': batch_size {batch} is larger than the training split "
                               f"({n_train} images with val_fraction {fraction:g}). Give a smaller batch size.")


def plan(options: RunOptions) -> Plan:
    """Load and check everything a run needs, before Ray starts. The study folder is not touched; the
    data may be: a dataset found nowhere is downloaded, and torchvision:/folder: datasets write their
    converted cache beside the data (hpo.sources)."""

    env.keep_ray_on_loopback(options.cluster_address)  # before the study file imports Ray
    study = load_study(options.study_file).with_overrides(parse_overrides(options.overrides))
    if options.smoke:
        study = study.smoke()
    check_job_paths(options)
    if storage.is_uri(options.storage):  # the report is written here and copied to <storage>/<name>/report
        root, flag = Path(options.results).resolve(), "--results"
        storage_path = f"{options.storage.rstrip('/')}/{study.name}"
    else:
        root = Path(options.storage or options.results).resolve()
        flag = "--storage" if options.storage else "--results"
        storage_path = str(root / study.name)
    check_results_root(root, flag)
    check_trackers(options.trackers)
    if options.cluster_address:
        check_cluster_reachable(options)
    if options.data_dir and Path(options.data_dir).exists() and not Path(options.data_dir).is_dir():
        raise HpoError(f"--data-dir {options.data_dir} is a file. Give the folder that holds the datasets "
                       f"(docs/data.md), or a new folder to download them into.")
    data_dir = options.data_dir or os.environ.get("HPO_DATA_DIR") or ("data" if Path("data").is_dir() else None)
    if data_dir is None and not options.cluster_address:
        data_dir = "data"  # where the driver downloads (below), so the trials read that copy, not their own
    data_dir = data_dir and str(Path(data_dir).resolve())  # trials run in other working directories
    settings = RunSettings(study.dataset, study.model, study.epochs, data_dir,
                           *((SMOKE_TRAIN, SMOKE_EVAL, SMOKE_FLOPS) if options.smoke else (None, None, None)))
    data = {"dataset": study.dataset, "data_dir": data_dir}
    if not options.cluster_address:
        # Read the data once here, so a missing or corrupt file is one clear message before Ray starts.
        # (On a cluster each node reads its own copy; the head need not have one.)
        from hpo.data import load_raw, locate
        new_dir = options.data_dir and not Path(options.data_dir).exists()
        folder = locate(study.dataset, data_dir)  # downloads into a new --data-dir when found nowhere
        if new_dir and not folder.resolve().is_relative_to(data_dir):
            raise HpoError(f"--data-dir {options.data_dir} does not exist; {study.dataset} would be read from "
                           f"{folder} instead. Pass the folder that holds it, or create {options.data_dir} "
                           "to download it there.")
        data["folder"] = str(folder)
        data["train_images"], data["test_images"] = (len(load_raw(study.dataset, s, data_dir)[1])
                                                     for s in ("train", "test"))
        check_splits(study, data["train_images"], settings.max_train)
        check_local_resources(options)
    p = Plan(study, options, root / study.name, storage_path, settings, data)
    return with_round(p)


def with_round(p: Plan) -> Plan:
    """The plan of the study's round this run is: a --extend's new round (what it trains), the latest
    round for a --resume, else round 1. Reads the study folder, writes nothing."""
    from hpo import rounds

    options = p.options
    if options.extend and (options.resume or options.overwrite):
        other = "--resume" if options.resume else "--overwrite"
        raise HpoError(f"--extend and {other} contradict each other: --extend adds a round to a finished study, "
                       "--resume continues an interrupted round, --overwrite starts again. Choose one.")
    if options.top is not None and (not options.extend or options.top < 1):
        raise HpoError(f"--top {options.top}: --top N (N >= 1) chooses what a --extend round trains: the missing "
                       "seeds of the N best configurations, e.g. `--extend --top 3 --set seeds=5`.")
    if options.extend:
        record = json.loads(json.dumps(p.record(), default=str))  # as study.json holds it
        extension = rounds.plan_extension(p.study, p.storage_path, record, top=options.top)
        return dataclasses.replace(p, round=extension.number, points=extension.points,
                                   new_configs=extension.new_configs, earlier_trials=extension.earlier_trials,
                                   round_trials=extension.trials(p.study.seeds))
    if options.resume:
        number, earlier, latest = rounds.latest_round(p.storage_path)
        if number > 1:  # the round as its --extend began it (a --top N: the round's, as the report says)
            began = dataclasses.replace(options, top=rounds.top_of(latest.get("command")))
            return dataclasses.replace(p, options=began, round=number, earlier_trials=earlier,
                                       round_trials=latest.get("planned_trials"),
                                       round_ray_trials=latest.get("ray_trials"))
    return p


CONNECT_TIMEOUT_S = 5  # a cluster's head answers at once; Ray's own client waits minutes in silence


def check_cluster_reachable(options: RunOptions) -> None:
    """The cluster's address answers (one TCP connection, no Ray): at a dead address Ray's client warns
    twice and then waits with no error (docs/ray-notes.md). "auto" is left to Ray."""
    import re
    import socket

    address = options.cluster_address
    found = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)/?", address.strip())
    if not found:
        if address.strip() != "auto":
            raise HpoError(f"The Ray cluster address {address!r} (from {options.address_source}) is not HOST:PORT, "
                           "ray://HOST:PORT or auto.")
        return
    host, port = found.group(1), int(found.group(2))
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        unset = (" Unset RAY_ADDRESS (`unset RAY_ADDRESS`) to run the study on this machine instead."
                 if not options.address else "")
        raise HpoError(f"No Ray cluster answers at {address} (from {options.address_source}): "
                       f"{e.strerror or type(e).__name__}. Start its head (`uv run ray start --head`, "
                       f"docs/cluster.md) or check the address.{unset}") from None


def check_trackers(trackers) -> None:
    """Each --log names a tracker whose optional extra is installed."""
    import importlib.util

    from hpo.registry import TRACKERS
    for name in trackers:
        if name not in TRACKERS:
            raise HpoError(f"--log {name!r}: unknown tracker; allowed: {', '.join(TRACKERS)}.")
        if importlib.util.find_spec(name) is None:
            raise HpoError(f"--log {name}: the {name} package is not installed. It is an optional extra: "
                           f"uv sync --extra {name} (conda/pip: pip install '{name}').")


def tracker_callbacks(p: Plan) -> list:
    from hpo.registry import TRACKERS
    if "wandb" in p.options.trackers and not _wandb_logged_in():
        os.environ.setdefault("WANDB_MODE", "offline")  # before Ray starts: its logging actor reads it
    return [TRACKERS[name].build(p.study, p.study_dir) for name in p.options.trackers]


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def start_ray(options: RunOptions):
    """Join the given cluster, or start an embedded Ray that listens on 127.0.0.1 only."""
    import logging

    env.keep_ray_on_loopback(options.cluster_address)
    import ray

    from hpo.ray_workarounds import start_local_ray
    address = options.cluster_address
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}  # our own progress lines say what happens
    if address:
        # Trials on other machines import hpo from a copy of this project that Ray hands to every node
        # (.gitignore'd files, such as .venv/, data/ and results/, stay here). A `ray job submit` job has
        # its --working-dir already.
        runtime_env = None if in_ray_job() else {"working_dir": str(Path(__file__).resolve().parents[1])}
        try:
            ray.init(address=address, runtime_env=runtime_env, **quiet)
        except ConnectionError as e:
            token = ("" if os.environ.get("RAY_AUTH_MODE") == "token" else
                     " A cluster started with `ray start` checks a token, and Ray sends one only with "
                     "RAY_AUTH_MODE=token in the environment: `export RAY_AUTH_MODE=token`, with the "
                     "cluster's token in ~/.ray/auth_token (or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH); "
                     "docs/cluster.md.")
            raise HpoError(f"Could not join the Ray cluster at {address} (from {options.address_source}): "
                           f"{e}.{token}") from None
        resources, nodes = ray.cluster_resources(), sum(n["Alive"] for n in ray.nodes())
        print(f"Joined the Ray cluster at {address} (from {options.address_source}): {nodes} nodes, "
              f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs.", flush=True)
    else:
        # Its processes out of our process group: a signal to the group reaches this driver only, which
        # stops them cleanly (StopSignals).
        start_local_ray(**quiet)
    return ray


def trial_resources(options: RunOptions) -> dict:
    import ray
    gpus = options.gpus_per_trial
    if gpus is None:
        gpus = 0.25 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    return {"cpu": options.cpus_per_trial, "gpu": gpus}


def trial_slots(resources: dict) -> int:
    """How many trials fit on the cluster at once: Ray's cluster resources over one trial's. From 8 CPUs
    on, one CPU is left to the driver and Ray's own processes, which start and stop the trials (16
    launch-bound trials on 16 cores starve them)."""
    import ray
    total = ray.cluster_resources()
    cpus = total.get("CPU", 0) - (1 if total.get("CPU", 0) >= 8 else 0)
    slots = cpus / resources["cpu"] if resources["cpu"] else math.inf
    if resources["gpu"]:
        slots = min(slots, total.get("GPU", 0) / resources["gpu"])
    return max(1, int(slots + 1e-9)) if math.isfinite(slots) else 1


def warn_if_cluster_too_small(resources: dict) -> None:
    """On a cluster nodes may still join (autoscaling): say what the trials wait for, then wait."""
    import ray
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if not any(n.get("CPU", 0) >= resources["cpu"] and n.get("GPU", 0) >= resources["gpu"] for n in nodes):
        print(f"warning: no node of this cluster has {resources['cpu']:g} CPUs and {resources['gpu']:g} GPUs "
              "for one trial: the trials wait until such a node joins (Ctrl-C to stop).", file=sys.stderr, flush=True)


def build_tuner(p: Plan, trainable, callbacks=()):
    """The Ray Tune experiment of a plan: `trainable(config, settings)` (hpo.trainable.tune_trainable)
    with the plan's resources, search, scheduler and storage; a --resume restores it."""
    from ray import tune

    from hpo.study import SCHEDULERS, SEARCHES

    study, options = p.study, p.options
    trainable = tune.with_resources(tune.with_parameters(trainable, settings=p.settings), trial_resources(options))
    if options.resume:
        from hpo.ray_workarounds import replace_restored_callbacks
        studydir.relocate(p)
        tuner = tune.Tuner.restore(p.experiment_path, trainable=trainable, resume_unfinished=True)
        replace_restored_callbacks(tuner, callbacks)
        return tuner
    space = dict(study.space)
    # Optuna's record of the search beside the report: `optuna-dashboard <study folder>/optuna.journal`.
    # Not with s3://-like storage: the journal would stay on this machine, and a resume elsewhere would
    # restore a search that points at a file it does not have.
    journal = None if storage.is_uri(p.storage_path) else p.study_dir / "optuna.journal"
    p.study_dir.mkdir(parents=True, exist_ok=True)
    search_alg, num_samples = SEARCHES[study.search].build(
        dataclasses.replace(study, num_samples=max(1, p.new_configs)) if p.round > 1 else study, space,
        options.max_concurrent, journal=journal, seed=p.round - 1)
    if p.round > 1:
        search_alg, num_samples = extension_search(p, space, search_alg, num_samples)
    # Ray Tune gives a searcher other than its own variant generator ONE pending trial at a time unless
    # max_concurrent_trials is set (tune_controller._get_max_pending_trials): new trials then start one
    # actor start-up apart and most slots stay idle (an H100 with 16 slots ran 1.7-4.3 trials at once).
    # Every slot busy, unless --max-concurrent says otherwise.
    from ray.tune.search import BasicVariantGenerator
    max_concurrent = options.max_concurrent
    if max_concurrent is None and not isinstance(search_alg, BasicVariantGenerator):
        max_concurrent = p.slots or trial_slots(trial_resources(options))
    max_concurrent = max_concurrent or None  # 0: Ray Tune's own default (bench/gpu_check.sh compares it)
    run_config = tune.RunConfig(
        name=experiment_name(p.round), storage_path=p.storage_path, callbacks=list(callbacks), verbose=0,
        # Two, not one: a driver killed between a trial's new checkpoint and the next
        # experiment snapshot must still find the checkpoint that snapshot names.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=options.max_failures))
    # A multi-objective study's metrics go to OptunaSearch itself (hpo.registry); Ray Tune takes one.
    # --top's seeds run every epoch, as the best configurations' first seeds did: compared on equal terms.
    scheduler = "fifo" if options.top else study.scheduler
    single = not isinstance(study.metric, list)
    tune_config = tune.TuneConfig(metric=study.metric if single else None, mode=study.mode if single else None,
                                  search_alg=search_alg,
                                  scheduler=SCHEDULERS[scheduler].build(study), num_samples=num_samples,
                                  max_concurrent_trials=max_concurrent,
                                  time_budget_s=study.time_budget_min and study.time_budget_min * 60,
                                  reuse_actors=True)
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def extension_search(p: Plan, space: dict, search_alg, num_samples: int):
    """An --extend round's search (hpo.rounds): its fixed configurations (more seeds of earlier ones, new grid
    points), then for a search the new configurations it draws (`search_alg`, which continues the Optuna
    study in the journal). In a seed-grouped study (Study.seed_grouped) a configuration's missing seeds are
    one trial, as its first seeds were: ASHA judges them by their mean, and on a GPU they train fused."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from hpo.searchers import NoNewConfigurations, PointsFirst

    grouped = p.study.seed_grouped
    points = seed_groups(p.points) if grouped else [dict(c) for c in p.points]
    if not p.new_configs and grouped:
        # Not Ray's variant generator: it walks a point's list of seeds element by element (a TypeError).
        # Each point is a whole trial config, so the space has nothing left to add.
        space.clear()
        return PointsFirst(NoNewConfigurations(), points), len(points)
    if not p.new_configs:
        space.pop(GROUP_KEY, None)
        # A key the space derives per trial (tune.sample_from: a bundle of hpo.variants) is in every point,
        # resolved. Ray puts a placeholder where the space has the function and resolves it per trial, and a
        # point's value in its place failed that (Ray 2.60: "TypeError: 'int' object is not subscriptable";
        # without the value a resumed round's trials got the placeholder itself): the points say it alone.
        for key, value in list(space.items()):
            if isinstance(value, tune.search.sample.Function):
                space[key] = None
        if "seed" not in space:  # a search's space has no seed key for the points to set
            space["seed"] = tune.grid_search(sorted({c["seed"] for c in points}))
        if any(EPOCHS_KEY in c for c in points):  # nor the fixed epochs of an earlier configuration's seeds
            space[EPOCHS_KEY] = None
        return (BasicVariantGenerator(points_to_evaluate=points, random_state=0,
                                      max_concurrent=p.options.max_concurrent or 0), len(points))
    if not points:
        return search_alg, num_samples
    if not grouped:
        points = [{**c, GROUP_KEY: None} for c in points]  # the space's seed group, overridden
    return PointsFirst(search_alg, points), len(points) + num_samples


def report_writer(p: Plan):
    """The Ray Tune callback that keeps <study_dir>/report current (hpo.report)."""
    from hpo.report import ReportWriter

    options = p.options
    started_as = dataclasses.replace(options, extend=p.round > 1)  # a resumed round: the --extend that began it
    meta = {"study_file": options.study_file, "command": started_as.command(), "smoke": options.smoke,
            "set": list(options.overrides), "data": p.data, "slots": p.slots,
            "planned_trials": p.earlier_trials + p.planned_trials, "round": p.round, "round_trials": p.planned_trials,
            "round_ray_trials": p.ray_trials}
    return ReportWriter(p.study, p.study_dir, p.experiment_path, meta,
                        mirror=f"{p.storage_path}/report" if storage.is_uri(p.storage_path) else None)


class StopSignals:
    """Ctrl-C, SIGTERM (Slurm's time limit and scancel, systemd, docker stop, GNU timeout) and SIGHUP (a
    closed terminal, an ssh drop) stop the study the same way: Ray Tune's SIGINT handler while it runs (a
    clean stop, its state saved; Ray Tune then puts this handler back), KeyboardInterrupt outside it.
    Repeats within REPEAT_S of the last are one signal: timeout signals the driver and then its group,
    and a second SIGINT would cut Ray Tune's clean stop short."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    REPEAT_S = 2.0

    def __init__(self):
        self.received: list[str] = []  # the names of the signals acted on
        self.last = -math.inf

    def __enter__(self):
        self.previous = {s: signal.getsignal(s) for s in self.SIGNALS}
        self.install()
        return self

    def install(self) -> None:
        """Ours again: ray.init puts a C++ SIGTERM handler of Ray's in the driver (it logs the signal and
        exits 15), and Ray Tune leaves its SIGINT handler behind when nothing stopped it."""
        for s in self.SIGNALS:
            signal.signal(s, self._stop)

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _stop(self, signum, frame):
        now = time.monotonic()
        if now - self.last < self.REPEAT_S:
            return
        self.last = now
        self.received.append(signal.Signals(signum).name)
        if signum == signal.SIGHUP and os.isatty(1):  # the terminal is gone: a write to it would raise
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
        if signal.getsignal(signal.SIGINT) == self._stop:  # outside Ray Tune's fit
            raise KeyboardInterrupt
        signal.raise_signal(signal.SIGINT)  # to Ray Tune's handler


def execute(p: Plan) -> int:
    """Run a planned study to its end (or a clean stop); returns the exit status."""
    from hpo.report import LiveReport
    from hpo.trainable import tune_trainable

    options, study = p.options, p.study
    # From here Ctrl-C, SIGTERM and SIGHUP stop the study cleanly (StopSignals).
    with studydir.StudyLock(p.lock_path), StopSignals() as stop:
        studydir.prepare_study_dir(p)
        this_round = (f", round {p.round}: {p.planned_trials} new trials beside the {p.earlier_trials} of rounds "
                      f"1-{p.round - 1}" if p.round > 1 else f": {p.planned_trials} trials")
        how = (f"the missing seeds of the {options.top} best configurations, no early stopping" if options.top
               else f"{study.search} search, {study.scheduler} scheduler")
        if any(EPOCHS_KEY in c for c in p.points):
            how += "; new seeds of earlier configurations train as many epochs as their first seeds"
        print(f"Study {study.name}{this_round} of at most {study.epochs} epochs ({how}) -> {p.study_dir}", flush=True)
        trackers = tracker_callbacks(p)
        start_ray(options)
        stop.install()
        resources = trial_resources(options)
        if options.cluster_address:
            warn_if_cluster_too_small(resources)
        p = dataclasses.replace(p, slots=min(trial_slots(resources), options.max_concurrent or math.inf))
        print(f"{p.slots} trial slots: {resources['cpu']:g} CPUs and {resources['gpu']:g} GPUs per trial. "
              f"TensorBoard: tensorboard --logdir {p.experiment_path}", flush=True)
        writer = report_writer(p)
        from hpo.progress import ProgressView
        live = [LiveReport(p.study_dir, options.live_report_s)] if options.analysis and options.live_report_s else []
        progress = ProgressView(study, verbose=options.verbose, planned=p.ray_trials)
        from hpo.diskspace import DiskWatch, disk_full
        disk = DiskWatch(p.study_dir, Path(p.experiment_path)) if not storage.is_uri(p.storage_path) else None
        tuner = build_tuner(p, tune_trainable, [writer, progress, *live, *trackers, *([disk] if disk else [])])
        full = None
        try:
            tuner.fit()
            # Ray Tune turns a first Ctrl-C into a clean stop (state saved) and returns; its
            # handler then puts the previous one (ours) back, which is how we can tell.
            interrupted = signal.getsignal(signal.SIGINT) == stop._stop
        except KeyboardInterrupt:
            interrupted = True
        except Exception as e:
            if not disk_full(e):
                raise
            full, interrupted = e, True
        finally:
            stop.install()
            for callback in live:
                callback.stop()
            progress.close()
        short_of_space = bool(full or (disk and disk.stopped))
        if interrupted:  # before the analysis, so that a scheduler's SIGKILL after its grace time loses nothing
            print(f"\n{stop_message(p, stop, disk, full)}", flush=True)
        # Still under the lock: a --resume or --overwrite started now must not race the report's last writes.
        analysed = not options.analysis or short_of_space or analyse(p.study_dir)
        if storage.is_uri(p.storage_path) and not full:  # beside the experiment, with the analysis's files
            storage.upload(p.study_dir / "report", f"{p.storage_path}/report")
    if interrupted:
        print(f"The report has what finished: {p.study_dir / 'report'}", flush=True)
        return 1 if short_of_space else 130
    if not analysed:
        return 130
    print(done_message(p, writer), flush=True)
    return 0


def stop_message(p: Plan, stop: StopSignals, disk, full: BaseException | None) -> str:
    """Why a study stopped before its end and how to continue it; the resume command only where Ray's
    record of the trials is readable (a disk that filled during Ray's own write leaves it cut)."""
    if full:
        reason = f"The disk is full ({' '.join(str(full).split())[:200]}): the study stopped."
    elif disk is not None and disk.stopped:
        reason = disk.message()
    else:
        reason = f"Stopped{f' by {stop.received[0]}' if stop.received else ''} before the end."
    damaged = studydir.damaged_record(p.experiment_path)
    if damaged:
        return (f"{reason} {damaged}: it cannot be resumed; the report keeps what finished. Start again with: "
                f"{p.options.command()} --overwrite")
    then = "Continue" if reason.startswith("Stopped") else "Once there is space again, continue"
    return f"{reason} {then} with: {p.options.command(resume=True)}"


def done_message(p: Plan, writer) -> str:
    """The end of a study that ran to its end: what became of its trials, and a note on idle slots."""
    trials, study = writer.counts, p.study
    unfinished = trials["total"] - sum(trials[k] for k in FINAL)
    budget = (f", {unfinished} not finished when the {study.time_budget_min:g}-minute time budget ran out"
              if writer.meta.get("budget_ran_out") and unfinished else "")
    cut = f", {trials['interrupted']} interrupted" if trials["interrupted"] else ""
    note = ""
    if writer.utilisation is not None and writer.utilisation < 0.7 and trials["total"] > 1:
        note = (f"note: the trial slots were busy {writer.utilisation:.0%} of the time ({p.slots} slots). Likely "
                "reasons: trials shorter than a Ray actor's start-up (a few seconds), fewer trials than slots, "
                "or a --max-concurrent below the slots. See the timeline in the report.\n")
    return (f"{note}Done: {trials['completed']} trials completed, {trials['stopped_early']} stopped early, "
            f"{trials['diverged']} diverged, {trials['failed']} failed{cut}{budget}. Report: {p.study_dir / 'report'}")


def analyse(study_dir: Path) -> bool:
    """`python -m analysis` in its own process: the study's results are safe whatever it does, and
    the toolkit's data flows one way (run -> report files -> analysis). --trust: the study-file model in
    its checkpoints is the class this run was given and trained (hpo.checkpoints). In its own process
    session: a signal to our group (a second Ctrl-C, a scheduler's SIGTERM) reaches this driver only,
    which stops the analysis and says how to redo it. False when it was stopped."""
    again = shlex.join(["python", "-m", "analysis", str(study_dir)])
    try:
        proc = subprocess.run([sys.executable, "-m", "analysis", str(study_dir), "--trust"],
                              cwd=Path(__file__).resolve().parents[1], start_new_session=True)
    except KeyboardInterrupt:  # subprocess.run has stopped it
        print(f"\nThe analysis was stopped; the study's results are all kept. Write the report with: {again}",
              file=sys.stderr, flush=True)
        return False
    if proc.returncode != 0:
        print(f"warning: the analysis failed (exit status {proc.returncode}); run it again with: {again}",
              file=sys.stderr)
    return True


def main(argv=None) -> int:
    try:
        return execute(plan(parse_args(argv)))
    except HpoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before Ray Tune ran (after, execute says what was kept)
        print("\nStopped.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
