"""python -m hpo.run STUDY.py [options]: run a study as a Ray Tune experiment.

Locally it starts an embedded Ray on 127.0.0.1; with --address (or inside
`ray job submit`) it joins that cluster. Results: <results>/<study>/experiment
(Ray's experiment directory) and <results>/<study>/report (see docs/report-format.md).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import math
import os
import runpy
import shutil
import signal
import sys
import traceback
from pathlib import Path

from hpo.errors import HpoError

SMOKE_EPOCHS, SMOKE_TRIALS, SMOKE_TRAIN, SMOKE_EVAL = 2, 4, 2048, 1024


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hpo.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="a study file, e.g. studies/mnist_batchsize.py")
    p.add_argument("--results", default="results", help="where results go (default ./results)")
    p.add_argument("--data-dir", help="where datasets are looked up first")
    p.add_argument("--smoke", action="store_true",
                   help=f"quick check: at most {SMOKE_EPOCHS} epochs, {SMOKE_TRIALS} trials, "
                        f"{SMOKE_TRAIN} training and {SMOKE_EVAL} validation/test images per trial")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study (Tuner.restore)")
    p.add_argument("--overwrite", action="store_true", help="delete the study's earlier results first")
    p.add_argument("--address", help="join a running Ray cluster (e.g. 127.0.0.1:6379 or auto)")
    p.add_argument("--storage", help="shared storage for a cluster: a path every node sees, or s3://...")
    p.add_argument("--gpus-per-trial", type=float,
                   help="GPUs per trial; fractions pack trials onto one GPU (default 0.25 where GPUs exist, else 0)")
    p.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs per trial (default 1)")
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    p.add_argument("--max-failures", type=int, default=2,
                   help="retries of a trial that fails (a lost node, a crash) from its last checkpoint (default 2)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a study field or a space key, e.g. --set dataset=fashion_mnist --set epochs=3")
    p.add_argument("--no-analysis", action="store_true", help="skip python -m analysis at the end")
    return p.parse_args(argv)


def parse_value(text: str):
    """'0.01' -> 0.01, 'True' -> True, '[1, 2]' -> [1, 2]; anything else stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_set(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HpoError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=0.001 or --set dataset=fashion_mnist.")
        overrides[key.strip()] = parse_value(value.strip())
    return overrides


def load_study(path: str):
    """Execute a study file and return its `study` (an hpo.Study)."""
    from hpo.study import Study

    file = Path(path)
    if not file.is_file():
        raise HpoError(f"Study file {path} does not exist. Study files live in studies/, e.g. studies/mnist_batchsize.py.")
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


def smoke(study):
    """The same study, shrunk to a quick check of the whole pipeline."""
    space = dict(study.space)
    grids = {k: list(v["grid_search"]) for k, v in space.items() if isinstance(v, dict) and "grid_search" in v}
    while study.search == "grid" and grids and math.prod(map(len, grids.values())) > SMOKE_TRIALS:
        longest = max(grids, key=lambda k: len(grids[k]))
        grids[longest].pop()  # keep the first values: the smoke study still varies what the study varies
    space.update({k: {"grid_search": v} for k, v in grids.items()})
    samples = 1 if study.search == "grid" else min(study.num_samples, SMOKE_TRIALS)
    return dataclasses.replace(study, space=space, epochs=min(study.epochs, SMOKE_EPOCHS), num_samples=samples,
                               seeds=1, grace_period=1)


def is_uri(path) -> bool:
    return bool(path) and "://" in str(path)


def storage_exists(path: str) -> bool:
    """Whether a file or folder exists: a local path, or a URI (s3://, gs://...) read with pyarrow."""
    if not is_uri(path):
        return Path(path).exists()
    import pyarrow.fs
    fs, fs_path = pyarrow.fs.FileSystem.from_uri(path)
    return fs.get_file_info(fs_path).type != pyarrow.fs.FileType.NotFound


def prepare_study_dir(study_dir: Path, args, storage_path: str | None = None) -> None:
    """`storage_path`: where Ray Tune keeps the experiment (<storage>/<name>; study_dir unless --storage is a URI)."""
    storage_path = storage_path or str(study_dir)
    experiment = f"{storage_path}/experiment"
    if args.resume and args.overwrite:
        raise HpoError("--resume and --overwrite contradict each other: choose one.")
    if args.resume:
        if not storage_exists(f"{experiment}/tuner.pkl"):
            raise HpoError(f"--resume: {experiment} holds no interrupted study to continue. Run without --resume.")
        return
    remote = is_uri(storage_path) and storage_exists(storage_path)
    if remote or (study_dir.exists() and any(study_dir.iterdir())):
        if not args.overwrite:
            raise HpoError(f"Results for this study already exist in {storage_path if remote else study_dir}. Add "
                           f"--resume to continue it, --overwrite to delete them and start again, or --results DIR "
                           f"(--storage URI) to write elsewhere.")
        if study_dir.exists():
            shutil.rmtree(study_dir)
        if remote:
            import pyarrow.fs
            fs, fs_path = pyarrow.fs.FileSystem.from_uri(storage_path)
            fs.delete_dir(fs_path)


def in_ray_job() -> bool:
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ  # set by Ray for the entrypoint of `ray job submit`


def check_job_paths(args) -> None:
    """Inside `ray job submit` the working directory is a temporary copy of the project (Ray's runtime
    environment): results written there would be lost with it."""
    if not in_ray_job():
        return
    target = args.storage or args.results
    if not is_uri(target) and not Path(target).is_absolute():
        raise HpoError(f"This study runs inside `ray job submit`, whose working directory is a temporary copy of "
                       f"the project: results in {target}/ would be lost. Pass --storage with an absolute path on "
                       f"a file system every node shares (e.g. --storage /shared/hpo), or a URI (s3://..., gs://...).")


def cluster_address(args) -> str | None:
    return args.address or os.environ.get("RAY_ADDRESS")


def set_ray_environment(args) -> None:
    """Must run before Ray is first imported (study files import it too)."""
    address = cluster_address(args)
    host = (address or "").split("://")[-1].rsplit(":", 1)[0].strip("[]")
    if not address or host in ("127.0.0.1", "localhost", "::1"):
        # Read by Ray when it is imported: keeps GCS, raylet, dashboard and workers on
        # loopback (shared/RAY_NOTES.md). Local studies open no ports to the network, and a
        # driver joining a cluster at 127.0.0.1 reaches it there, not at this machine's other address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Ray's `uv run` hook would start every worker with `uv run` in a fresh copy of the project, which
    # builds a new .venv there for every Ray session (on a cluster: downloads torch on every node).
    # Workers use the Python of the node that runs them instead: this environment, or the one
    # `uv run ray start` runs in on a cluster node (README, "Run on a cluster").
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def start_ray(args):
    """Join the given cluster, or start an embedded Ray that listens on 127.0.0.1 only."""
    import logging

    import ray
    address = cluster_address(args)
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}  # our own progress lines say what happens
    if address:
        # Trials on other machines import hpo from a copy of this project that Ray hands to every node
        # (.gitignore'd files, such as .venv/, data/ and results/, stay here). A `ray job submit` job has
        # its --working-dir already.
        runtime_env = None if in_ray_job() else {"working_dir": str(Path(__file__).resolve().parents[1])}
        ray.init(address=address, runtime_env=runtime_env, **quiet)
    else:
        # "local": a new Ray of our own, even where `ray start` left its address in /tmp/ray for
        # ray.init() to join.
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    return ray


def build_tuner(study, args, study_dir: Path, experiment_path: str, storage_path: str):
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator, Repeater
    from ray.tune.search.optuna import OptunaSearch
    import optuna

    from hpo.report import ReportWriter, command_line
    from hpo.trainable import RunSettings, tune_trainable

    settings = RunSettings(study.dataset, study.model, study.epochs, args.data_dir,
                           SMOKE_TRAIN if args.smoke else None, SMOKE_EVAL if args.smoke else None)
    gpus = args.gpus_per_trial
    if gpus is None:
        gpus = 0.25 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    trainable = tune.with_resources(tune.with_parameters(tune_trainable, settings=settings),
                                    {"cpu": args.cpus_per_trial, "gpu": gpus})
    space = dict(study.space)
    num_samples, search_alg = study.num_samples, None
    has_grid = any(isinstance(v, dict) and "grid_search" in v for v in space.values())
    if study.search == "grid" or (study.search == "random" and has_grid):
        # Ray's own variant generator: grids, and random samplers drawn num_samples times per grid point.
        # It takes the concurrency limit itself: Tune ignores max_concurrent_trials for a generator passed in.
        search_alg = BasicVariantGenerator(random_state=0, max_concurrent=args.max_concurrent or 0)
        if study.seeds > 1 and "seed" not in space:
            space["seed"] = tune.grid_search(list(range(study.seeds)))
    else:
        sampler = (optuna.samplers.TPESampler(seed=0) if study.search == "optuna"
                   else optuna.samplers.RandomSampler(seed=0))
        search_alg = OptunaSearch(sampler=sampler)
        if study.seeds > 1:  # every sampled configuration is run `seeds` times, seed = repeat index
            search_alg = Repeater(search_alg, repeat=study.seeds, set_index=True)
            num_samples *= study.seeds
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=study.epochs, grace_period=study.grace_period,
                               reduction_factor=study.reduction_factor)
                 if study.scheduler == "asha" else FIFOScheduler())
    meta = {"study_file": args.study, "command": command_line(), "smoke": args.smoke}
    writer = ReportWriter(study, study_dir, experiment_path, meta,
                          mirror=f"{storage_path}/report" if is_uri(storage_path) else None)
    run_config = tune.RunConfig(
        name="experiment", storage_path=storage_path, callbacks=[writer], verbose=0,
        # Two, not one: a driver killed between a trial's new checkpoint and the next
        # experiment snapshot must still find the checkpoint that snapshot names.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=args.max_failures))
    tune_config = tune.TuneConfig(metric=study.metric, mode=study.mode, search_alg=search_alg, scheduler=scheduler,
                                  num_samples=num_samples, max_concurrent_trials=args.max_concurrent,
                                  time_budget_s=study.time_budget_min and study.time_budget_min * 60,
                                  reuse_actors=True)
    if args.resume:
        return tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True)
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def run(args) -> int:
    set_ray_environment(args)
    study = load_study(args.study)
    study = study.with_overrides(parse_set(args.set))
    if args.smoke:
        study = smoke(study)
    check_job_paths(args)
    if is_uri(args.storage):  # the report is written here and copied to <storage>/<name>/report
        study_dir = Path(args.results).resolve() / study.name
        storage_path = f"{args.storage.rstrip('/')}/{study.name}"
    else:
        study_dir = Path(args.storage or args.results).resolve() / study.name
        storage_path = str(study_dir)
    experiment_path = f"{storage_path}/experiment"
    data_dir = args.data_dir or os.environ.get("HPO_DATA_DIR") or ("data" if Path("data").is_dir() else None)
    args.data_dir = data_dir and str(Path(data_dir).resolve())  # trials run in other working directories
    if not cluster_address(args):
        # Read the data once here, so a missing or corrupt file is one clear message before Ray starts.
        # (On a cluster each node reads its own copy; the head need not have one.)
        from hpo.data import load_raw
        for split in ("train", "test"):
            load_raw(study.dataset, split, args.data_dir)
    # After every check: --overwrite deletes only for a run that starts.
    prepare_study_dir(study_dir, args, storage_path)
    print(f"Study {study.name}: {study.num_trials()} trials of at most {study.epochs} epochs "
          f"({study.search} search, {study.scheduler} scheduler) -> {study_dir}", flush=True)
    start_ray(args)
    tuner = build_tuner(study, args, study_dir, experiment_path, storage_path)
    handler = signal.getsignal(signal.SIGINT)
    try:
        tuner.fit()
        # Ray Tune turns a first Ctrl-C into a clean stop (state saved) and returns; its
        # handler then puts the previous one back, which is how we can tell.
        interrupted = signal.getsignal(signal.SIGINT) is handler
    except KeyboardInterrupt:
        interrupted = True
    trials = json.loads((study_dir / "report" / "study.json").read_text())["trials"]
    if not args.no_analysis:
        try:
            from analysis import analyse
            analyse(study_dir)
        except Exception as e:  # the study's results are safe; only the tables and figures are missing
            print(f"warning: the analysis failed ({type(e).__name__}: {e}); "
                  f"run it again with: python -m analysis {study_dir}", file=sys.stderr)
    if is_uri(storage_path):  # next to the experiment, with the analysis's tables and figures
        from hpo.report import upload
        upload(study_dir / "report", f"{storage_path}/report")
    if interrupted:
        print(f"\nStopped before the end. The report has what finished: {study_dir / 'report'}\n"
              f"Continue with: python -m hpo.run {args.study} --resume" + _repeat_options(args), flush=True)
        return 130
    unfinished = trials["total"] - sum(trials[k] for k in ("completed", "stopped_early", "diverged", "failed"))
    budget = (f", {unfinished} not finished when the {study.time_budget_min:g}-minute time budget ran out"
              if study.time_budget_min and unfinished else "")
    print(f"Done: {trials['completed']} trials completed, {trials['stopped_early']} stopped early, "
          f"{trials['diverged']} diverged, {trials['failed']} failed{budget}. Report: {study_dir / 'report'}",
          flush=True)
    return 0


def _repeat_options(args) -> str:
    options = [f"--results {args.results}"] if args.results != "results" else []
    options += [f"--storage {args.storage}"] if args.storage else []
    options += [f"--address {args.address}"] if args.address else []
    options += [f"--set {s}" for s in args.set] + (["--smoke"] if args.smoke else [])
    return "".join(" " + o for o in options)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except HpoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
