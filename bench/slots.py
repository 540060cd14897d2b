"""Slot utilisation: how busy the trial slots of an Optuna + ASHA study stay, through hpo.run's own Tuner
set-up (hpo.run.build_tuner and its report writer), with Ray Tune's own concurrency for a searcher
(`--max-concurrent 0`: one pending trial at a time, what the toolkit did before) against the toolkit's
default (as many trials in flight as there are slots). Fractional CPUs make many slots on few cores
(`--cpus-per-trial 0.25`: 8 slots on 2 cores); each trial sleeps a fixed time per "epoch", so the cores
are not what limits it.

slot_utilisation = trial-seconds / (slots x wall time), from the report writer's start and end times.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import wait_until_quiet

EPOCH_S = 1.0  # each trial "trains" this long per epoch


def sleeping_trainable(config: dict, settings=None) -> None:
    from ray import tune

    from hpo.study import METRICS

    for epoch in range(1, settings.epochs + 1):
        time.sleep(EPOCH_S)
        tune.report({**dict.fromkeys(METRICS, 0.5), "epoch": epoch, "val_acc": config["lr"] * epoch,
                     "params": 1, "node": "bench"})


def run_side(num_trials: int, epochs: int, cpus_per_trial: float, max_concurrent: int | None, root: Path) -> dict:
    from ray import tune

    from hpo.run import Plan, RunOptions, build_tuner, report_writer, trial_resources, trial_slots
    from hpo.study import Study
    from hpo.trainable import RunSettings

    study = Study(name="bench_slots", dataset="fashion_mnist", model="lenet5",
                  space={"lr": tune.loguniform(1e-3, 1e-1)}, epochs=epochs, search="optuna", scheduler="asha",
                  num_samples=num_trials, grace_period=epochs, reduction_factor=2)  # ASHA stops nothing
    options = RunOptions(study_file="bench_slots.py", results=str(root), cpus_per_trial=cpus_per_trial,
                         max_concurrent=max_concurrent, analysis=False)
    slots = trial_slots(trial_resources(options))
    study_dir = root / f"side-{time.monotonic_ns()}" / study.name
    plan = Plan(study, options, study_dir, str(study_dir), RunSettings(study.dataset, study.model, epochs),
                slots=slots)
    writer = report_writer(plan)
    start = time.perf_counter()
    build_tuner(plan, sleeping_trainable, [writer]).fit()
    wall = time.perf_counter() - start
    spans = [(s, e) for s, e in writer.times.values() if e is not None]
    busy = sum(e - s for s, e in spans)
    first = min(s for s, _ in spans)
    last = max(e for _, e in spans)
    return {"slots": slots, "wall_s": wall, "trial_s": busy, "slot_utilisation": busy / (slots * (last - first)),
            "mean_in_flight": busy / (last - first), "trials": len(spans)}


def measure(quick: bool = False, cpus_per_trial: float = 0.25) -> dict:
    """Both sides, after one untimed warm-up study (Ray's own processes still start at first)."""
    from hpo.run import RunOptions, start_ray

    import ray
    num_trials, epochs = (8, 2) if quick else (24, 3)
    own_ray = not ray.is_initialized()
    if own_ray:
        start_ray(RunOptions(study_file="bench.py"))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-slots-") as tmp:
            run_side(2, 1, cpus_per_trial, None, Path(tmp))  # warm-up
            sides = {}
            for name, max_concurrent in (("ray_default", 0), ("all_slots", None)):
                wait_until_quiet()
                sides[name] = run_side(num_trials, epochs, cpus_per_trial, max_concurrent, Path(tmp))
    finally:
        if own_ray:
            ray.shutdown()
    return {"trials": num_trials, "epochs": epochs, "epoch_s": EPOCH_S, "cpus_per_trial": cpus_per_trial, **sides,
            "slot_utilisation": sides["all_slots"]["slot_utilisation"],
            "utilisation_gain": sides["all_slots"]["slot_utilisation"] / sides["ray_default"]["slot_utilisation"],
            # the same trials' wall time: what concurrency buys once the actors' start-up is paid
            "study_speedup": sides["ray_default"]["wall_s"] / sides["all_slots"]["wall_s"]}
