"""Study throughput: a fixed Fashion-MNIST HPO budget (LeNet-5, 16 trials x 4 epochs, Optuna TPE + ASHA)
run through hpo.run's own Tuner (hpo.run.start_ray + hpo.run.build_tuner: the real trainable, reuse_actors,
checkpoints every epoch, the report writer; one CPU per trial, so two trials at a time on 2 cores), against
the same 16 configurations trained one after another in a plain in-process loop (hpo.trainable.train_epochs,
all threads, no Ray), which is what a user without the toolkit would run.

    study_speedup     = plain loop of the whole budget (every configuration, every epoch) / the study
                        (Ray start-up + Tuner.fit): what ASHA's early stopping and two trials at a time
                        buy, net of the toolkit's overhead;
    same_work_speedup = the loop's time for exactly the epochs the study ran / the study: parallelism
                        net of overhead, without early stopping's saving.

Trials/hour and the best validation accuracy of each side are recorded too. Both sides train on the same
images (max_train training, max_eval validation/test images of Fashion-MNIST; the fixed split).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

from bench.common import fashion_data_dir, wait_until_quiet
from hpo import env

NAME = "bench_study"


def make_study(num_trials: int, epochs: int):
    from ray import tune

    from hpo.study import Study

    return Study(name=NAME, dataset="fashion_mnist", model="lenet5",
                 space={"optimizer": tune.choice(["sgd", "adam"]), "lr": tune.loguniform(5e-4, 0.1),
                        "momentum": tune.uniform(0.5, 0.95), "batch_size": tune.choice([64, 128, 256]),
                        "normalize": [0.5, 0.5]},
                 epochs=epochs, search="optuna", scheduler="asha", num_samples=num_trials,
                 grace_period=1, reduction_factor=2)


def run_study(study, root: Path, data_dir: str | None, max_train: int, max_eval: int) -> dict:
    """The study through hpo.run's own API (build_tuner with the real trainable and report writer),
    each trial capped at the bench's image counts."""
    from hpo.run import Plan, RunOptions, build_tuner, report_writer, start_ray
    from hpo.trainable import RunSettings, tune_trainable

    options = RunOptions(study_file=f"{NAME}.py", results=str(root), data_dir=data_dir, analysis=False)
    settings = RunSettings(study.dataset, study.model, study.epochs, data_dir, max_train, max_eval)
    study_dir = root / study.name
    plan = Plan(study, options, study_dir, str(study_dir), settings)
    start = time.perf_counter()
    ray = start_ray(options)
    ray_init_s = time.perf_counter() - start
    try:
        tuner = build_tuner(plan, tune_trainable, [report_writer(plan)])
        fit_start = time.perf_counter()
        results = tuner.fit()
        fit_s = time.perf_counter() - fit_start
    finally:
        ray.shutdown()
    trials = []
    for result in sorted(results, key=lambda r: str(r.path)):
        if result.error:
            raise RuntimeError(f"study trial failed: {result.error}")
        df = result.metrics_dataframe
        trials.append({"config": {k: v for k, v in result.config.items()}, "epochs_run": int(df["epoch"].max()),
                       "best_val_acc": float(df["val_acc"].max())})
    return {"ray_init_s": ray_init_s, "fit_s": fit_s, "trials": trials}


def run_loop(trials: list[dict], epochs: int, data_dir: str | None, max_train: int, max_eval: int) -> list[dict]:
    """Every configuration for every epoch, one after another, in this process (torch's default threads).
    Per configuration: wall time at the end of each epoch (the first includes building data and model)."""
    from hpo.trainable import RunSettings, train_epochs

    settings = RunSettings("fashion_mnist", "lenet5", epochs, data_dir, max_train, max_eval)
    out = []
    for trial in trials:
        start, ends, accs = time.perf_counter(), [], []
        for metrics, _ in train_epochs(trial["config"], settings, device="cpu"):
            ends.append(time.perf_counter() - start)
            accs.append(metrics["val_acc"])
        out.append({"epoch_end_s": ends, "best_val_acc": max(accs)})
    return out


def measure(quick: bool = False, num_trials: int | None = None, epochs: int | None = None,
            max_train: int | None = None, max_eval: int | None = None, data_dir: str | None = None) -> dict:
    num_trials = num_trials or (4 if quick else 16)
    epochs = epochs or (2 if quick else 4)
    max_train = max_train or (1024 if quick else 12000)
    max_eval = max_eval or (500 if quick else 5000)
    data_dir = data_dir or fashion_data_dir()
    env.keep_ray_on_loopback(None)  # before make_study imports Ray: Ray reads it then (hpo/env.py)
    study = make_study(num_trials, epochs)
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        ran = run_study(study, Path(tmp), data_dir, max_train, max_eval)
    study_s = ran["ray_init_s"] + ran["fit_s"]
    wait_until_quiet()  # the loop is not timed while Ray's processes still exit
    loop = run_loop(ran["trials"], epochs, data_dir, max_train, max_eval)
    loop_s = sum(t["epoch_end_s"][-1] for t in loop)
    same_work_s = sum(t["epoch_end_s"][s["epochs_run"] - 1] for s, t in zip(ran["trials"], loop))
    epochs_run = [t["epochs_run"] for t in ran["trials"]]
    return {"trials": num_trials, "epochs": epochs, "images": {"train": max_train, "val_test": max_eval},
            "search": "optuna", "scheduler": "asha", "grace_period": study.grace_period,
            "reduction_factor": study.reduction_factor, "cpus_per_trial": 1,
            "study_s": study_s, "ray_init_s": ran["ray_init_s"], "fit_s": ran["fit_s"],
            "study_epochs_trained": sum(epochs_run), "epochs_run": epochs_run,
            "loop_s": loop_s, "loop_same_work_s": same_work_s,
            "study_speedup": loop_s / study_s, "same_work_speedup": same_work_s / study_s,
            "study_trials_per_hour": num_trials / study_s * 3600,
            "loop_trials_per_hour": num_trials / loop_s * 3600,
            "study_best_val_acc": max(t["best_val_acc"] for t in ran["trials"]),
            "loop_best_val_acc": max(t["best_val_acc"] for t in loop),
            "configs": [{k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                         for k, v in t["config"].items()} for t in ran["trials"]]}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    print(json.dumps(measure(quick=a.quick), indent=1))
