"""The process environment that torch and Ray read when they are first imported.

`hpo/__init__.py` imports this module before anything else, so every entry
point (`python -m hpo.run`, `python -m hpo.trainable`, `python -m bench`, a
Ray trial worker unpickling the trainable) has these settings before torch or
Ray loads. Only the loopback setting depends on the command line; `hpo.run`
calls `keep_ray_on_loopback` before it loads the study file (which imports Ray).
An explicit setting in the environment always wins.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while they wait (libgomp's default) collapse when other processes share the
# cores: LeNet-5 on a busy 2-core machine trained at ~400 samples/s with 2 spinning threads, ~8,000 with
# 1 thread, and as fast or faster with 2 passive ones (bench/README.md, "threads"). On an idle machine
# spinning is 1.7x faster; a study's trials always share the machine, so passive is the default. Read
# once, when torch loads libgomp. (Under Ray a trial gets OMP_NUM_THREADS = its CPUs.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Ray's `uv run` hook would start every worker with `uv run` in a fresh copy of the project, which
# builds a new .venv there for every Ray session (on a cluster: downloads torch on every node).
# Workers use the Python of the node that runs them instead: this environment, or the one
# `uv run ray start` runs in on a cluster node (docs/cluster.md).
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# Ray Tune's console output (its "Configuration for experiment" box, a TensorBoard hint into Ray's
# temporary folder, status tables): hpo.progress shows the study instead. Ray's older output path, which
# RunConfig(verbose=0) silences, is the one this selects.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Ray Tune warns when saving the experiment state takes long; on a shared 2-core machine it often does.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def is_loopback(address: str | None) -> bool:
    """No address (an embedded Ray) or a cluster at 127.0.0.1 / localhost."""
    host = (address or "").split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return not address or host in ("127.0.0.1", "localhost", "::1")


def keep_ray_on_loopback(address: str | None) -> None:
    """Must run before Ray is first imported. Read by Ray when it is imported: keeps GCS, raylet,
    dashboard and workers on 127.0.0.1 (docs/ray-notes.md). Local studies open no ports to the network,
    and a driver joining a cluster at 127.0.0.1 reaches it there, not at this machine's other address."""
    if is_loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
