"""GPU packing: N trial processes (`python -m hpo.trainable --device cuda ...`) on one GPU at once, which is
what Ray's fractional GPUs do (--gpus-per-trial 1/N), without Ray. For N in 1, 4, 8, 16: the aggregate training
samples/s (each process's median epoch, summed), the epoch time, and the GPU utilisation sampled by nvidia-smi
while they run. Plus the trainable's options that may help on a GPU (amp, channels_last), measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from bench.common import ROOT, fashion_data_dir, median


class UtilisationSampler:
    """nvidia-smi every 200 ms in the background: GPU utilisation (%) and memory used (MiB)."""

    def __init__(self):
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "200"]
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        except OSError:
            return
        try:
            for line in proc.stdout:
                if self._stop.is_set():
                    break
                try:
                    util, mem = (float(v) for v in line.split(",")[:2])
                except ValueError:
                    continue
                self.samples.append((time.monotonic(), util, mem))
        finally:
            proc.terminate()
            proc.wait()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def between(self, start: float, end: float) -> dict:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if not inside:
            return {"gpu_util_pct": float("nan"), "gpu_mem_mib": float("nan")}
        return {"gpu_util_pct": median([s[1] for s in inside]), "gpu_mem_mib": max(s[2] for s in inside)}


def run_concurrent(n: int, epochs: int, batch_size: int, max_train: int | None, data_dir: str | None,
                   extra: list[str] = (), sampler: UtilisationSampler | None = None) -> dict:
    """Start n trial processes together; per process the median of its epochs after the first."""
    cmd = [sys.executable, "-m", "hpo.trainable", "--device", "cuda", "--dataset", "fashion_mnist",
           "--model", "lenet5", "--epochs", str(epochs), "--max-eval", "2000",
           "--set", f"batch_size={batch_size}", "--set", "optimizer='sgd'", "--set", "momentum=0.9", *extra]
    if max_train:
        cmd += ["--max-train", str(max_train)]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    # One CPU thread per trial, as Ray gives a trial with --cpus-per-trial 1.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(cmd + ["--set", f"seed={i}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(n)]
    outputs = [p.communicate() for p in procs]
    per_process = []
    for p, (out, err) in zip(procs, outputs):
        if p.returncode != 0:
            raise RuntimeError(f"hpo.trainable failed ({p.returncode}): {err[-2000:]}")
        per_process.append([json.loads(line) for line in out.splitlines() if line.startswith("{")])
    # Steady state: epochs after the first, when all n processes overlap (their ends in wall-clock time
    # are reconstructed from the end of the run backwards would need clocks; the median epoch is robust).
    steady = [m[1:] or m for m in per_process]
    sps = [median([e["samples_per_s"] for e in m]) for m in steady]
    epoch_s = [median([e["epoch_time_s"] for e in m]) for m in steady]
    return {"trials": n, "samples_per_s": sum(sps), "per_trial_samples_per_s": median(sps),
            "epoch_time_s": median(epoch_s), "val_acc": median([m[-1]["val_acc"] for m in per_process])}


def packing(counts=(1, 4, 8, 16), epochs: int = 4, batch_size: int = 64, max_train: int | None = None,
            data_dir: str | None = None, extra: list[str] = ()) -> dict:
    data_dir = data_dir or fashion_data_dir()
    curve = []
    with UtilisationSampler() as sampler:
        for n in counts:
            start = time.monotonic()
            point = run_concurrent(n, epochs, batch_size, max_train, data_dir, extra)
            # Utilisation over the middle of the run (start-up and the stragglers' tails left out).
            end = time.monotonic()
            span = end - start
            point.update(sampler.between(start + 0.4 * span, start + 0.8 * span), wall_s=span)
            curve.append(point)
            print(f"  packing {n:2d} trials: {point['samples_per_s']:9.0f} samples/s, "
                  f"epoch {point['epoch_time_s']:.2f} s, GPU {point['gpu_util_pct']:.0f}%", flush=True)
    one = curve[0]["samples_per_s"]
    for point in curve:
        point["throughput_vs_one"] = point["samples_per_s"] / one
    return {"batch_size": batch_size, "epochs": epochs, "curve": curve,
            "gpu_packing_16x": next((p["throughput_vs_one"] for p in curve if p["trials"] == 16),
                                    curve[-1]["throughput_vs_one"])}


def options(batch_sizes=(64, 256), repeats: int = 3, max_train: int | None = None, data_dir: str | None = None) -> dict:
    """Training epoch time of the trainable on the GPU as it is ("plain": fused optimizer) against variants
    (interleaved, medians; speedup > 1 means the variant is faster): "foreach" = PyTorch's default optimizer
    (the trainable before it fused), "amp", "channels_last", "cudnn_benchmark"."""
    import torch

    from bench.datapath import CONFIG, epoch_seconds
    from hpo.trainable import RunSettings, Trial, make_optimizer

    data_dir = data_dir or fashion_data_dir()
    settings = RunSettings("fashion_mnist", "lenet5", 1, data_dir, max_train, 1000)
    results = {}
    for bs in batch_sizes:
        def trial(**extra):  # the eager step: graph_step() below compares it with the CUDA graph
            return Trial({**CONFIG, "cuda_graphs": False, **extra, "batch_size": bs}, settings, device="cuda")

        trials = {"plain": trial(), "foreach": trial(), "amp": trial(amp=True), "channels_last": trial(),
                  "cudnn_benchmark": trial()}
        t = trials["foreach"]
        t.optimizer = make_optimizer("sgd", t.model.parameters(), CONFIG["lr"], CONFIG["momentum"], 0.0)
        cl = trials["channels_last"]
        cl.model = cl.model.to(memory_format=torch.channels_last)
        times = {name: [] for name in trials}
        for i in range(repeats + 1):
            for name, t in trials.items():
                torch.backends.cudnn.benchmark = name == "cudnn_benchmark"
                seconds = epoch_seconds(t, t.device)
                if i:
                    times[name].append(seconds)
        torch.backends.cudnn.benchmark = False
        base = median(times["plain"])
        results[str(bs)] = {name: {"epoch_s": median(v), "speedup": median(v) and base / median(v)}
                            for name, v in times.items()}
        results[str(bs)]["images"] = len(trials["plain"].data.train)
    return results


def graph_step(batch_sizes=(64, 256), repeats: int = 3, max_train: int | None = None,
               data_dir: str | None = None) -> dict:
    """The trainable's training epoch with its step captured as a CUDA graph (the default on a GPU) against
    the same trial eager (cuda_graphs=False): ms per step, interleaved, medians; speedup = eager / graph.
    Both again in channels-last layout (model and images converted before the first step, as
    hpo.trainable.Trial.choose_layout does on a CPU): `channels_last_speedup_<mode>` = NCHW / channels-last,
    the figure that decides the layout on CUDA (NCHW until it is measured)."""
    import torch

    from bench.datapath import CONFIG, epoch_seconds
    from hpo.trainable import RunSettings, Trial

    settings = RunSettings("fashion_mnist", "lenet5", 1, data_dir or fashion_data_dir(), max_train, 1000)
    results = {}
    for bs in batch_sizes:
        trials = {mode: Trial({**CONFIG, "batch_size": bs, "cuda_graphs": mode.startswith("graph")}, settings,
                              device="cuda")
                  for mode in ("eager", "graph", "eager_cl", "graph_cl")}
        for mode in ("eager_cl", "graph_cl"):
            t = trials[mode]
            t.model.to(memory_format=torch.channels_last)
            for split in (t.data.train, t.data.val, t.data.test):
                split.images = split.images.contiguous(memory_format=torch.channels_last)
        assert trials["graph"].step_mode == "cuda_graph", trials["graph"].step_mode
        steps = -(-len(trials["eager"].data.train) // bs)
        times = {mode: [] for mode in trials}
        for i in range(repeats + 1):  # the first round warms up (and captures the graph)
            for mode, t in trials.items():
                seconds = epoch_seconds(t, t.device)
                if i:
                    times[mode].append(seconds / steps * 1e3)
        eager, graph = median(times["eager"]), median(times["graph"])
        results[str(bs)] = {"eager_step_ms": eager, "graph_step_ms": graph, "speedup": eager / graph,
                            "eager_cl_step_ms": median(times["eager_cl"]),
                            "graph_cl_step_ms": median(times["graph_cl"]),
                            "channels_last_speedup_eager": eager / median(times["eager_cl"]),
                            "channels_last_speedup_graph": graph / median(times["graph_cl"])}
    results["gpu_step_speedup"] = results[str(batch_sizes[0])]["speedup"]
    results["step_ms_batch64"] = results.get("64", {}).get("graph_step_ms")
    return results


def dispatch(batch_size: int = 64, steps: int = 300) -> dict:
    """Where a small model's step goes on a GPU: steps/s of the bare training step on one fixed batch
    (no data path at all) against the trainable's epoch loop, and the top operators by host time."""
    import torch
    import torch.nn.functional as F

    from bench.datapath import CONFIG, epoch_seconds
    from hpo.trainable import RunSettings, Trial

    trial = Trial({**CONFIG, "batch_size": batch_size, "cuda_graphs": False}, RunSettings("fashion_mnist", "lenet5", 1,
                  fashion_data_dir(), None, 1000), device="cuda")
    x, y = trial.data.train.images[:batch_size], trial.data.train.labels[:batch_size]
    model, opt = trial.model, trial.optimizer

    def bare(n):
        for _ in range(n):
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()

    bare(20)
    bare_s = min(epoch_seconds_of(bare, steps) for _ in range(3)) / steps
    n_batches = -(-len(trial.data.train) // batch_size)
    loop_s = min(epoch_seconds(trial, trial.device) for _ in range(3)) / n_batches
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        bare(50)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    top = [{"op": e.key, "calls_per_step": e.count / 50, "host_us_per_step": e.self_cpu_time_total / 50,
            "device_us_per_step": getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) / 50}
           for e in events]
    device_us = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))
                    for e in prof.key_averages()) / 50
    return {"batch_size": batch_size, "bare_step_ms": bare_s * 1e3, "trainable_step_ms": loop_s * 1e3,
            "data_path_share": max(0.0, 1 - bare_s / loop_s), "device_busy_us_per_step": device_us, "top_ops": top}


def epoch_seconds_of(fn, n) -> float:
    import torch

    torch.cuda.synchronize()
    start = time.perf_counter()
    fn(n)
    return time.perf_counter() - start
