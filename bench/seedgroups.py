"""Seed groups or one trial per seed, for a grid with the FIFO scheduler (the default there is one trial per
seed: hpo.study.Study.seed_grouped). The same study (LeNet-5 on Fashion-MNIST, a grid of 3 batch sizes x
3 seeds, every trial to its last epoch) run through hpo.run's own Tuner (bench.study.run_study) both ways,
interleaved:

    per_seed_speedup = the study's wall time (Ray start-up + Tuner.fit) as 3 seed groups / as 9 trials
                       (above 1: one trial per seed is faster).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from bench.common import fashion_data_dir, median, wait_until_quiet
from hpo import env


def make_study(epochs: int, seed_groups: bool):
    from ray import tune

    from hpo.study import Study

    return Study(name="bench_seedgroups", dataset="fashion_mnist", model="lenet5",
                 space={"batch_size": tune.grid_search([64, 128, 256]), "lr": 0.01, "momentum": 0.9},
                 epochs=epochs, seeds=3, seed_groups=seed_groups)


def measure(quick: bool = False, repeats: int | None = None, epochs: int | None = None,
            max_train: int | None = None, max_eval: int | None = None, data_dir: str | None = None) -> dict:
    from bench.study import run_study

    repeats = repeats or (1 if quick else 2)
    epochs = epochs or (2 if quick else 3)
    max_train = max_train or (1024 if quick else 8192)
    max_eval = max_eval or (500 if quick else 2000)
    data_dir = data_dir or fashion_data_dir()
    env.keep_ray_on_loopback(None)  # before make_study imports Ray (hpo/env.py)
    times: dict[str, list[float]] = {"trials": [], "groups": []}
    for _ in range(repeats):
        for name, grouped in (("trials", False), ("groups", True)):
            study = make_study(epochs, grouped)
            assert study.seed_grouped == grouped and study.ray_trials() == (3 if grouped else 9)
            wait_until_quiet()
            start = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="bench-seedgroups-") as tmp:
                ran = run_study(study, Path(tmp), data_dir, max_train, max_eval)
            times[name].append(ran["ray_init_s"] + ran["fit_s"])
            assert time.perf_counter() - start >= times[name][-1]
    study = dataclasses.asdict(make_study(epochs, False))
    return {"repeats": repeats, "epochs": epochs, "images": {"train": max_train, "val_test": max_eval},
            "grid": study["space"]["batch_size"], "seeds": 3, "cpus_per_trial": 1,
            "trials_s": median(times["trials"]), "groups_s": median(times["groups"]),
            "per_seed_speedup": median(times["groups"]) / median(times["trials"]), "samples": times}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(measure(quick="--quick" in sys.argv), indent=1))
