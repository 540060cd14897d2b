"""Trial overhead: wall time per trivial trial of a study run through hpo.run's own Tuner set-up
(hpo.run.build_tuner: Optuna + ASHA, reuse_actors, the report writer, checkpoint config), side by
side with Ray Tune's default set-up (same search, scheduler and trainable, reuse_actors unset) and
with plain Optuna in-process.

The trivial trainable does what the real one does per epoch minus the training: it reports every
contract metric (with a small checkpoint, as hpo.trainable.tune_trainable does) `REPORTS` times.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import timed, wait_until_quiet

REPORTS = 3  # "epochs" per trivial trial


def trivial_trainable(config: dict, settings=None, checkpoint: bool = True) -> None:
    """A trial with no work: `REPORTS` reports of every contract metric, each with a small checkpoint."""
    from ray import tune

    from hpo.study import METRICS

    for epoch in range(1, REPORTS + 1):
        metrics = {**dict.fromkeys(METRICS, 0.5), "epoch": epoch, "val_acc": config["lr"] * epoch,
                   "params": 1, "node": "bench"}
        if checkpoint:
            with tempfile.TemporaryDirectory() as d:
                Path(d, "state.pt").write_bytes(b"\0" * 1024)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(metrics)


def _study(num_trials: int):
    from ray import tune

    from hpo.study import Study

    return Study(name="bench_overhead", dataset="fashion_mnist", model="lenet5",
                 space={"lr": tune.loguniform(1e-3, 1e-1), "batch_size": tune.choice([64, 128, 256])},
                 epochs=REPORTS, search="optuna", scheduler="asha", num_samples=num_trials)


def toolkit_study(num_trials: int, root: Path) -> float:
    """Seconds for hpo.run.build_tuner(...).fit() of `num_trials` trivial trials (Ray already started):
    hpo.run's Tuner set-up and report writer, with the trivial trainable in place of the real one."""
    from hpo.plan import Plan, RunOptions
    from hpo.run import build_tuner, report_writer
    from hpo.trainable import RunSettings

    study = _study(num_trials)
    study_dir = root / f"toolkit-{time.monotonic_ns()}" / study.name
    options = RunOptions(study_file="bench_overhead.py", results=str(study_dir.parent), analysis=False)
    plan = Plan(study, options, study_dir, str(study_dir), RunSettings(study.dataset, study.model, study.epochs))
    start = time.perf_counter()
    tuner = build_tuner(plan, trivial_trainable, [report_writer(plan)])
    results = tuner.fit()
    elapsed = time.perf_counter() - start
    _check(results, num_trials)
    return elapsed


def default_study(num_trials: int, root: Path) -> float:
    """The same study in Ray Tune's default set-up: OptunaSearch + ASHAScheduler, nothing else set."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    study = _study(num_trials)
    start = time.perf_counter()
    tuner = tune.Tuner(
        trivial_trainable, param_space=study.space,
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", search_alg=OptunaSearch(),
                                    scheduler=ASHAScheduler(max_t=REPORTS), num_samples=num_trials),
        run_config=tune.RunConfig(storage_path=str(root / f"default-{time.monotonic_ns()}"), verbose=0))
    results = tuner.fit()
    elapsed = time.perf_counter() - start
    _check(results, num_trials)
    return elapsed


def _check(results, num_trials: int) -> None:
    errors = [r.error for r in results if r.error]
    if len(results) != num_trials or errors:
        raise RuntimeError(f"overhead study: {len(results)}/{num_trials} trials, errors: {errors[:1]}")


def optuna_study(num_trials: int) -> float:
    """Plain Optuna in-process: TPE + successive halving pruner, the same reports per trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        trial.suggest_categorical("batch_size", [64, 128, 256])
        for epoch in range(1, REPORTS + 1):
            trial.report(lr * epoch, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return lr * REPORTS

    start = time.perf_counter()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0),
                                pruner=optuna.pruners.SuccessiveHalvingPruner())
    study.optimize(objective, n_trials=num_trials)
    return time.perf_counter() - start


def measure(num_trials: int = 16, repeats: int = 3, default_trials: int | None = None,
            small_trials: int | None = None) -> dict:
    """After one warm-up study: interleaved toolkit (N trials), toolkit (small), default, plain Optuna, then
    again; medians.

    trial_overhead_s: seconds per trial of the N-trial study (amortised: includes the Tuner's and the
    actors' start-up spread over N). marginal_s: the slope between the two study sizes, (T_N - T_small) /
    (N - small), what one more trial costs once the study runs."""
    # Importing hpo sets Ray's environment (hpo/env.py) before Ray is first imported: Ray reads it then.
    # (Imported first, Ray kept its `uv run` hook, which started every worker through uv: seconds more
    # per trial actor.)
    from hpo.run import RunOptions, start_ray
    options = RunOptions(study_file="bench.py")
    import ray

    default_trials = default_trials or num_trials
    small_trials = small_trials or max(1, num_trials // 2)
    own_ray = not ray.is_initialized()
    ray_init_s = timed(start_ray, options)[0] if own_ray else float("nan")  # embedded, 127.0.0.1, as hpo.run
    toolkit, small, default, plain, waited = [], [], [], [], []

    def settled(study, *args):
        # So no side is timed while the previous one's actors still exit (here they had always
        # finished: every wait was one 0.5 s sample; `waited_for_quiet_s` keeps them).
        waited.append(wait_until_quiet())
        return study(*args)

    try:
        with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
            # Warm-up, reported apart: the first study after Ray starts waits seconds longer for its first
            # trial (Ray's own processes are still starting); that is Ray start-up, not per-trial cost.
            first = settled(toolkit_study, small_trials, Path(tmp))
            for _ in range(repeats):
                toolkit.append(settled(toolkit_study, num_trials, Path(tmp)))
                small.append(settled(toolkit_study, small_trials, Path(tmp)))
                default.append(settled(default_study, default_trials, Path(tmp)) / default_trials)
                plain.append(optuna_study(num_trials) / num_trials)
    finally:
        if own_ray:
            ray.shutdown()
    big_s, small_s = statistics.median(toolkit), statistics.median(small)
    t = big_s / num_trials
    d, p = statistics.median(default), statistics.median(plain)
    marginal = (big_s - small_s) / (num_trials - small_trials) if num_trials != small_trials else float("nan")
    return {"trials": num_trials, "small_trials": small_trials, "default_trials": default_trials,
            "repeats": repeats, "reports_per_trial": REPORTS,
            "trial_overhead_s": t, "marginal_s": marginal, "default_overhead_s": d, "optuna_overhead_s": p,
            "overhead_reduction": d / t, "vs_plain_optuna": t / p, "ray_init_s": ray_init_s,
            "first_study_s": first,
            "samples": {"toolkit_s": toolkit, "toolkit_small_s": small, "default_per_trial_s": default,
                        "optuna_per_trial_s": plain, "waited_for_quiet_s": waited}}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args()
    import json
    print(json.dumps(measure(a.trials, a.repeats), indent=1))
