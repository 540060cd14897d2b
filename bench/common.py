"""Helpers shared by the benchmark parts: hardware description, medians, interleaving."""

from __future__ import annotations

import importlib.util
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def fashion_data_dir() -> str | None:
    """A data dir for Fashion-MNIST: $HPO_DATA_DIR, bench/data, ./data or Debian's package (None: let hpo.data look)."""
    for candidate in (os.environ.get("HPO_DATA_DIR"), ROOT / "bench" / "data", ROOT / "data"):
        if candidate and (Path(candidate) / "fashion_mnist").is_dir():
            return str(candidate)
    return None


def median(values) -> float:
    return float(statistics.median(values))


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs since boot (Linux)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)  # idle + iowait


def wait_until_quiet(busy_cpus: float = 0.5, timeout_s: float = 15.0, interval_s: float = 0.5) -> float:
    """Wait until less than `busy_cpus` CPUs' worth of work runs on the machine (e.g. the processes of a
    Ray study that just ended), at most `timeout_s`.
    Returns the seconds waited. Where /proc/stat is missing, returns at once."""
    start = time.perf_counter()
    try:
        idle, total = _cpu_times()
        while time.perf_counter() - start < timeout_s:
            time.sleep(interval_s)
            idle2, total2 = _cpu_times()
            if total2 > total and (1 - (idle2 - idle) / (total2 - total)) * os.cpu_count() < busy_cpus:
                break
            idle, total = idle2, total2
    except (OSError, ValueError, IndexError):
        pass
    return time.perf_counter() - start


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def hardware(device: str = "cpu") -> dict:
    import torch

    info = {"cpu": cpu_name(), "cpus": len(os.sched_getaffinity(0)), "load_average": load_average(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            # Without installed .pyc files every new Python (each Ray trial actor) compiles torch and ray.tune
            # from source where it may not write them (PYTHONDONTWRITEBYTECODE): trial_overhead_s doubles.
            "bytecode_cache": os.path.exists(importlib.util.cache_from_source(torch.__file__))}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        try:
            info["gpu_driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
        info["cuda"] = torch.version.cuda
    return info
