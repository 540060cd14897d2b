"""python -m bench [--quick] [--parts ...]: measure, print a table, write bench/latest.json and append
to bench/history.jsonl. Every figure is a ratio of two things measured side by side in this one run."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from hpo import env

# Before torch or Ray is first imported (by any part): importing hpo set what they read (hpo/env.py);
# the bench's own Ray is embedded and stays on 127.0.0.1.
env.keep_ray_on_loopback(None)

HERE = Path(__file__).resolve().parent
CPU_PARTS = ("data", "epoch", "threads", "overhead", "study", "slots", "seedgroups", "fusedseeds")
ALL_PARTS = CPU_PARTS + ("gpu",)

# name: (section, key path, target, higher is better, what it is)
FIGURES = {
    "loader_speedup": ("cpu", ("data", "loader_speedup"), 1.8, True,
                       "trainable's data path vs the write-ups' DataLoader loop, CPU (min of batch 64, 256)"),
    **{f"epoch_speedup_{name}": ("cpu", ("epoch", f"epoch_speedup_{name}"), target, True,
                                 f"an epoch of {name} (train, val, test, checkpoint), 1 thread: NCHW / channels-last")
       for name, target in (("lenet5", None), ("lenet5_fm16", 1.2), ("mnist_net", 1.3), ("cifar_cnn", None))},
    "threads_speedup": ("cpu", ("threads", "speedup"), None, True,
                        "OMP passive vs active wait, 2 threads, trainable CLI on this shared CPU"),
    "two_trials_speedup": ("cpu", ("threads", "packing", "two_trials_speedup"), None, True,
                           "two 1-CPU LeNet-5 trials at once (1 thread each) / one 2-CPU trial (2 threads), samples/s"),
    "trial_overhead_s": ("cpu", ("overhead", "trial_overhead_s"), 0.5, False,
                         "s per trivial trial, hpo.run's Tuner set-up (Optuna+ASHA), amortised"),
    "trial_overhead_marginal_s": ("cpu", ("overhead", "marginal_s"), 0.15, False,
                                  "s per extra trivial trial (slope between two study sizes)"),
    "overhead_reduction": ("cpu", ("overhead", "overhead_reduction"), None, True,
                           "Ray Tune default set-up's overhead / the toolkit's (same trials)"),
    "study_speedup": ("cpu", ("study", "study_speedup"), None, True,
                      "plain sequential loop wall time / hpo.run study wall time (same trials)"),
    "slot_utilisation": ("cpu", ("slots", "slot_utilisation"), 0.85, True,
                         "Optuna+ASHA study of fixed-length trials, 8 fractional slots on 2 cores: "
                         "trial-s / (slots x wall)"),
    "slot_utilisation_gain": ("cpu", ("slots", "utilisation_gain"), None, True,
                              "the same, every slot busy (default) / Ray Tune's one pending trial "
                              "(--max-concurrent 0)"),
    "slot_study_speedup": ("cpu", ("slots", "study_speedup"), None, True,
                           "the same study's wall time, Ray Tune's default / every slot busy"),
    "per_seed_speedup": ("cpu", ("seedgroups", "per_seed_speedup"), None, True,
                         "grid x 3 seeds, FIFO, 2 slots: wall time as seed groups / as one trial per seed"),
    **{f"fused_seeds_speedup_{k}": ("cpu", ("fusedseeds", f"fused_seeds_speedup_{k}"), None, True,
                                    f"{k} LeNet-5 seeds, batch 64: samples/s as one fused model (torch.func.vmap) "
                                    "/ one after another, CPU") for k in (4, 16)},
    **{f"gpu_fused_seeds_speedup_{k}": ("gpu", ("fusedseeds", f"fused_seeds_speedup_{k}"), 3.0 if k == 16 else None,
                                        True, "the same on a GPU (one after another: each its CUDA graph)")
       for k in (4, 16)},
    "gpu_loader_speedup": ("gpu", ("data", "loader_speedup"), 10.0, True,
                           "trainable's data path vs the write-ups' DataLoader loop, GPU (min of batch 64, 256)"),
    "gpu_step_speedup": ("gpu", ("graph", "gpu_step_speedup"), None, True,
                         "trainable's training step eager / as a replayed CUDA graph, batch 64"),
    "gpu_channels_last_speedup": ("gpu", ("graph", "64", "channels_last_speedup_graph"), None, True,
                                  "LeNet-5's graphed step, batch 64: NCHW / channels-last (decides the CUDA layout)"),
    "gpu_step_ms": ("gpu", ("graph", "step_ms_batch64"), 0.4, False,
                    "ms per training step with CUDA graphs, LeNet-5, batch 64"),
    "gpu_packing_16x": ("gpu", ("packing", "gpu_packing_16x"), 8.0, True,
                        "throughput of 16 concurrent LeNet-5 trials on one GPU / one trial"),
}


def dig(document: dict, section: str, path) -> float | None:
    value = document.get(section) or {}
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def figures(document: dict) -> dict:
    return {name: dig(document, section, path) for name, (section, path, *_rest) in FIGURES.items()}


def table(document: dict) -> str:
    rows = [f"{'figure':28s} {'value':>9s} {'target':>9s}  met  what"]
    for name, (section, path, target, higher, what) in FIGURES.items():
        value = dig(document, section, path)
        if value is None:
            rows.append(f"{name:28s} {'-':>9s} {'':>9s}       {what} (not measured)")
            continue
        met = "" if target is None else ("yes" if (value >= target if higher else value <= target) else "NO")
        target_text = "" if target is None else (">= " if higher else "<= ") + f"{target:g}"
        rows.append(f"{name:28s} {value:9.3f} {target_text:>9s}  {met:3s}  {what}")
    for section in ("cpu", "gpu"):
        hw = (document.get(section) or {}).get("hardware")
        if hw:
            where = hw.get("gpu") or hw.get("cpu")
            rows.append(f"{section}: {where}, {hw.get('cpus')} CPUs, load {hw.get('load_average')}, "
                        f"measured {(document.get(section) or {}).get('date')}")
            if hw.get("bytecode_cache") is False:
                rows.append(f"{section}: no compiled bytecode installed (run `uv sync --compile-bytecode`): "
                            "every trial worker compiled torch and Ray Tune from source")
    return "\n".join(rows)


def keep_unmeasured(document: dict, previous: dict) -> dict:
    """A section or part not measured now keeps its last measurement; `part_dates` says when each part of
    a section was measured (a section's own date and hardware are those of its latest run)."""
    merged = dict(document)
    for section in ("cpu", "gpu"):
        old, new = previous.get(section) or {}, document.get(section)
        if new is None:
            if old:
                merged[section] = old
            continue
        not_parts = ("hardware", "part_dates")
        parts = [k for k in new if isinstance(new[k], dict) and k not in not_parts]
        dates = {**{k: old.get("date") for k in old if isinstance(old[k], dict) and k not in not_parts},
                 **(old.get("part_dates") or {}), **{k: new.get("date") for k in parts}}
        kept = {k: v for k, v in old.items() if k not in new and k != "part_dates"}
        merged[section] = {**kept, **new, "part_dates": dates}
    return merged


def run_parts(parts, quick: bool, device_gpu: bool) -> dict:
    from bench.common import hardware

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    document: dict = {}
    cpu_parts = [p for p in parts if p in CPU_PARTS]
    if cpu_parts:
        cpu = document["cpu"] = {"date": now, "hardware": hardware("cpu"), "quick": quick}
        if "data" in cpu_parts:
            from bench import datapath
            print("data path (CPU) ...", flush=True)
            cpu["data"] = (datapath.measure("cpu", repeats=1, max_train=2048) if quick
                           else datapath.measure("cpu", repeats=3))
        if "epoch" in cpu_parts:
            from bench import epoch
            print("an epoch in both memory layouts (CPU) ...", flush=True)
            cpu["epoch"] = (epoch.measure(repeats=1, max_train=2048, max_eval=1000) if quick
                            else epoch.measure(repeats=2))
        if "threads" in cpu_parts:
            from bench import threads
            print("thread settings (CPU) ...", flush=True)
            cpu["threads"] = threads.measure(repeats=1, max_train=1024) if quick else threads.measure()
            cpu["threads"]["packing"] = (threads.packing(repeats=1, epochs=2, max_train=1024) if quick
                                         else threads.packing())
        if "overhead" in cpu_parts:
            from bench import overhead
            print("trial overhead (Ray Tune, CPU) ...", flush=True)
            cpu["overhead"] = (overhead.measure(num_trials=4, small_trials=2, repeats=1) if quick
                               else overhead.measure())
        if "study" in cpu_parts:
            from bench import study
            print("study throughput (Ray Tune, CPU) ...", flush=True)
            cpu["study"] = study.measure(quick=quick)
        if "slots" in cpu_parts:
            from bench import slots
            print("slot utilisation (Ray Tune, CPU) ...", flush=True)
            cpu["slots"] = slots.measure(quick=quick)
        if "seedgroups" in cpu_parts:
            from bench import seedgroups
            print("seed groups or one trial per seed (Ray Tune, CPU) ...", flush=True)
            cpu["seedgroups"] = seedgroups.measure(quick=quick)
        if "fusedseeds" in cpu_parts:
            from bench import fusedseeds
            print("seeds fused or one after another (CPU) ...", flush=True)
            cpu["fusedseeds"] = fusedseeds.measure("cpu", **({"repeats": 1, "max_train": 2048} if quick else {}))
        cpu["hardware"]["load_average_end"] = hardware("cpu")["load_average"]
    if "gpu" in parts:
        if not device_gpu:
            print("gpu: no CUDA device here; skipped (the GPU section of the previous latest.json is kept)",
                  flush=True)
        else:
            from bench import datapath, gpu
            g = document["gpu"] = {"date": now, "hardware": hardware("cuda"), "quick": quick}
            print("data path (GPU) ...", flush=True)
            g["data"] = (datapath.measure("cuda", repeats=1, max_train=8192) if quick
                         else datapath.measure("cuda", repeats=3))
            print("amp / channels_last (GPU) ...", flush=True)
            g["options"] = gpu.options(repeats=1 if quick else 3, max_train=8192 if quick else None)
            print("training step: CUDA graph vs eager (GPU) ...", flush=True)
            g["graph"] = gpu.graph_step(repeats=1 if quick else 3, max_train=8192 if quick else None)
            print("step dispatch (GPU) ...", flush=True)
            g["dispatch"] = gpu.dispatch(steps=100 if quick else 300)
            print("packing (GPU) ...", flush=True)
            g["packing"] = (gpu.packing(counts=(1, 4), epochs=2, max_train=8192) if quick
                            else gpu.packing(epochs=3))
            from bench import fusedseeds
            print("seeds fused or one after another (GPU) ...", flush=True)
            g["fusedseeds"] = fusedseeds.measure("cuda", **({"repeats": 1} if quick else {}))
    return document


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes: a check that everything runs (about a minute)")
    p.add_argument("--parts", default=None,
                   help=f"comma-separated, from {', '.join(ALL_PARTS)} (default: all; gpu only where CUDA is; "
                        f"'' for none, e.g. with --merge)")
    p.add_argument("--out", default=str(HERE / "latest.json"), help="the JSON written (default bench/latest.json)")
    p.add_argument("--history", default=str(HERE / "history.jsonl"),
                   help="a dated line is appended here ('' for none)")
    p.add_argument("--merge", metavar="JSON", help="take the GPU section from this file (a run on a GPU machine)")
    args = p.parse_args(argv)

    import torch

    device_gpu = torch.cuda.is_available()
    parts = (args.parts.split(",") if args.parts is not None
             else [*CPU_PARTS, *(["gpu"] if device_gpu else [])])
    unknown = set(parts) - set(ALL_PARTS) - {""}
    if unknown:
        p.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL_PARTS)}")
    start = time.perf_counter()
    document = run_parts([x for x in parts if x], args.quick, device_gpu)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    document = keep_unmeasured(document, previous)
    if args.merge:
        document["gpu"] = json.loads(Path(args.merge).read_text())["gpu"]
    document = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
                "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
                "seconds": round(time.perf_counter() - start, 1), "figures": figures(document),
                "targets": {k: v[2] for k, v in FIGURES.items() if v[2] is not None}, **document}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1, default=_json_default) + "\n")
    if args.history:
        line = {k: document[k] for k in ("date", "quick", "command", "figures")}
        line["hardware"] = {s: (document.get(s) or {}).get("hardware") for s in ("cpu", "gpu")}
        with open(args.history, "a") as f:
            f.write(json.dumps(line, default=_json_default) + "\n")
    print(table(document))
    print(f"wrote {out}")
    return 0


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
