"""Thread settings: training samples/s of the trainable CLI (`python -m hpo.trainable`, LeNet-5 on
Fashion-MNIST, batch 64, SGD with momentum) with OpenMP's two wait policies, side by side (interleaved).

ACTIVE (and libgomp's default, for its first 300,000 spins) makes a waiting thread spin; when other
processes share the cores (a Ray study's other trials, anything else on the machine) a spinning thread
burns the time slice another thread needs, and the step collapses. hpo/trainable.py sets
OMP_WAIT_POLICY=PASSIVE before torch
loads. `speedup` = passive / active samples/s, both with 2 threads; "one_thread" (OMP_NUM_THREADS=1,
what a Ray trial with one CPU gets) is measured alongside for reference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench.common import ROOT, fashion_data_dir, median

VARIANTS = {  # name: environment on top of ours
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "2"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "2"},
    "one_thread": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"},
}


def cli_command(epochs: int, max_train: int, max_eval: int, data_dir: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "hpo.trainable", "--device", "cpu", "--dataset", "fashion_mnist",
           "--model", "lenet5", "--epochs", str(epochs), "--max-train", str(max_train),
           "--max-eval", str(max_eval), "--set", "batch_size=64", "--set", "optimizer='sgd'",
           "--set", "momentum=0.9"]
    return cmd + (["--data-dir", data_dir] if data_dir else [])


def run_cli(env_extra: dict, epochs: int, max_train: int, max_eval: int, data_dir: str | None,
            processes: int = 1) -> list[list[dict]]:
    """`processes` concurrent `python -m hpo.trainable` processes; each one's JSON lines (one per epoch)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    procs = [subprocess.Popen(cli_command(epochs, max_train, max_eval, data_dir), cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"hpo.trainable failed ({proc.returncode}): {stderr[-2000:]}")
        out.append([json.loads(line) for line in stdout.splitlines() if line.startswith("{")])
    return out


def packing(repeats: int = 2, epochs: int = 3, max_train: int = 16384, max_eval: int = 1000,
            data_dir: str | None = None) -> dict:
    """How a 2-core machine is best used: one trial with 2 CPUs (Ray sets OMP_NUM_THREADS=2 for it, and
    torch runs 2 intra-op threads) or two trials with 1 CPU each, at once (the default, 1 thread each).
    `two_trials_speedup` = the two 1-thread processes' summed training samples/s / the 2-thread one's
    (its epochs after the first; interleaved, medians)."""
    data_dir = data_dir or fashion_data_dir()
    one, two = [], []
    for _ in range(repeats):
        for threads, processes, into in (("2", 1, one), ("1", 2, two)):
            runs = run_cli({"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": threads}, epochs, max_train,
                           max_eval, data_dir, processes)
            into.append(sum(median([e["samples_per_s"] for e in (r[1:] or r)]) for r in runs))
    return {"repeats": repeats, "epochs": epochs, "images": max_train, "model": "lenet5", "batch_size": 64,
            "one_2_thread_trial_samples_per_s": median(one), "two_1_thread_trials_samples_per_s": median(two),
            "two_trials_speedup": median(two) / median(one), "samples": {"one": one, "two": two}}


def measure(repeats: int = 3, epochs: int = 2, max_train: int = 8192, max_eval: int = 1000,
            data_dir: str | None = None, variants=tuple(VARIANTS)) -> dict:
    """Interleaved processes (passive, active, one_thread, passive, ...); per process the samples/s of its
    epochs after the first (the first pays the allocator's and the caches' warm-up); medians."""
    data_dir = data_dir or fashion_data_dir()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name in variants:
            epochs_out, = run_cli(VARIANTS[name], epochs, max_train, max_eval, data_dir)
            steady = epochs_out[1:] or epochs_out
            samples[name].append(median([e["samples_per_s"] for e in steady]))
    out = {"repeats": repeats, "epochs": epochs, "images": max_train, "batch_size": 64,
           "samples_per_s": {name: median(v) for name, v in samples.items()}, "samples": samples}
    if "passive" in samples and "active" in samples:
        out["speedup"] = out["samples_per_s"]["passive"] / out["samples_per_s"]["active"]
    return out


if __name__ == "__main__":
    print(json.dumps(measure(repeats=1), indent=1))
