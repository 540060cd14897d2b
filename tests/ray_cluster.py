"""The Ray cluster plumbing of the cluster tests (tests/test_cluster.py, tests/test_own.py): free ports,
Ray's processes and their sockets, a two-node test cluster in a child process, and study drivers.

Every Ray here starts with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (docs/ray-notes.md), on free ports and
in its own temp dir, and is stopped by PID (never `ray stop`: it stops every Ray on the machine). The
two-node cluster lives in a child process running this file (`python tests/ray_cluster.py cluster DIR`),
so `import ray` happens there, with the variable set, and never in the pytest process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest


ROOT = Path(__file__).resolve().parents[1]

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


# ---------------------------------------------------------------- processes, ports, sockets

def _psutil():
    """psutil as bundled with Ray (ray/thirdparty_files), without importing ray into pytest."""
    try:
        import psutil
    except ImportError:
        sys.path.append(str(Path(importlib.util.find_spec("ray").submodule_search_locations[0], "thirdparty_files")))
        import psutil
    return psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_temp_dir() -> str:
    """Ray's temp dir: short, because Ray's unix socket paths inside it must stay under 108 characters
    (tmp_path is too deep for that)."""
    return tempfile.mkdtemp(prefix="hpo-ray-", dir="/tmp")


def ray_env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           # the environment's own python and ray first, as under `uv run`
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    return {**env, **extra}


def processes_of(root_pids=(), marker: str | None = None) -> list:
    """Processes started from `root_pids` (with all their descendants), and those whose command line
    holds `marker` (our Ray temp dir), never this process or its parents."""
    psutil = _psutil()
    me = {os.getpid()} | {p.pid for p in psutil.Process().parents()}
    found = {}
    for pid in root_pids:
        try:
            found[pid] = psutil.Process(pid)
        except psutil.Error:
            pass
    if marker:
        for p in psutil.process_iter(["cmdline"]):
            try:
                if p.pid not in me and any(marker in a for a in p.info["cmdline"] or []):
                    found[p.pid] = p
            except psutil.Error:
                pass
    for p in list(found.values()):
        try:
            found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.Error:
            pass
    return [p for pid, p in found.items() if pid not in me]


def stop_processes(procs: list, grace: float = 10) -> None:
    """SIGTERM, then SIGKILL what is left after `grace` seconds: only these processes, by PID."""
    psutil = _psutil()
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


def sockets(procs: list) -> tuple[set, set]:
    """(listening (ip, port), remote (ip, port) of established connections) of these processes."""
    psutil = _psutil()
    listening, remote = set(), set()
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    listening.add((c.laddr.ip, c.laddr.port))
                elif c.raddr:
                    remote.add((c.raddr.ip, c.raddr.port))
        except psutil.Error:
            pass  # a worker that just exited
    return listening, remote


def assert_loopback_only(listening: set, remote: set) -> None:
    assert listening, "no listening socket seen"
    assert {ip for ip, _ in listening} <= LOOPBACK, f"listening beyond loopback: {sorted(listening)}"
    assert {ip for ip, _ in remote} <= LOOPBACK, f"connections beyond loopback: {sorted(remote)}"


# ---------------------------------------------------------------- studies and reports

def write_study(folder: Path, name: str, lrs: list, epochs: int) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(f"""
        from ray import tune
        from hpo import Study

        study = Study(name="{name}", dataset="mnist", model="mnist_cnn",
                      space={{"lr": tune.grid_search({lrs!r}), "momentum": 0.5}}, epochs={epochs})
    """))
    return path


def report(study_dir: Path):
    d = study_dir / "report"
    return pd.read_csv(d / "trials.csv"), pd.read_csv(d / "epochs.csv"), json.loads((d / "study.json").read_text())


def results_by_trial(experiment: Path) -> dict[str, list[dict]]:
    """Every result each trial reported, in order, from Ray's own result.json files (a restarted
    trial appends to its file: an epoch run twice would show twice here)."""
    found = {}
    for path in experiment.glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            found[rows[0]["trial_id"]] = rows
    return found


def checkpoints_done(experiment: Path) -> dict[str, int]:
    """Trial folder -> epochs checkpointed so far (the trainable writes one checkpoint per epoch,
    straight into the storage, so this is current while Ray's own files are synced later)."""
    done = {}
    for trial in experiment.glob("tune_trainable_*"):
        names = (re.fullmatch(r"checkpoint_(\d+)", c.name) for c in trial.glob("checkpoint_*"))
        indices = [int(m.group(1)) for m in names if m]
        if indices:
            done[trial.name] = max(indices) + 1
    return done


def start_driver(study: Path, *args) -> subprocess.Popen:
    command = [sys.executable, "-m", "hpo.run", str(study), "--no-analysis", *map(str, args)]
    return subprocess.Popen(command, cwd=ROOT, env=ray_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(driver: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = driver.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        out, _ = driver.communicate()
        pytest.fail(f"the study did not finish in {timeout} s:\n{out[-3000:]}")
    assert driver.returncode == 0, f"hpo.run failed ({driver.returncode}):\n{out[-4000:]}"
    return out


# ---------------------------------------------------------------- fixtures

class TwoNodes:
    """A head and a worker node of 1 CPU each, in a child process that runs `cluster_main` below."""

    def __init__(self):
        self.temp_dir = short_temp_dir()
        self.log = open(Path(self.temp_dir, "cluster.log"), "w")
        self.proc = subprocess.Popen([sys.executable, __file__, "cluster", self.temp_dir], cwd=ROOT,
                                     env=ray_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        self.state: dict = {}

    def wait_until_up(self) -> None:
        self.state = self._read(timeout=180)

    def _read(self, timeout: float) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    break
                if line.startswith("CLUSTER "):
                    return json.loads(line[len("CLUSTER "):])
        raise RuntimeError(f"the test cluster did not answer; its log: {Path(self.temp_dir, 'cluster.log')}:\n"
                           + Path(self.temp_dir, "cluster.log").read_text()[-3000:])

    def command(self, text: str, timeout: float = 120) -> dict:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        self.state = self._read(timeout)
        return self.state

    @property
    def address(self) -> str:
        return self.state["address"]

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            stop_processes(processes_of([self.proc.pid], marker=self.temp_dir))
            self.log.close()
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def cluster_main(temp_dir: str) -> None:
    """Child process: a ray.cluster_utils.Cluster of a head and a worker node, 1 CPU each, on 127.0.0.1.
    Prints `CLUSTER {address, head, workers}` and then obeys stdin: kill-worker, add-worker, stop."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before `import ray`: loopback only
    os.environ["RAY_TMPDIR"] = temp_dir  # Ray's "current cluster" file goes here, not into /tmp/ray
    os.makedirs(os.path.join(temp_dir, "ray"), exist_ok=True)
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "temp_dir": temp_dir}
    cluster = Cluster(initialize_head=True, shutdown_at_exit=True,
                      head_node_args={**node, "include_dashboard": False, "dashboard_agent_listen_port": free_port()})
    cluster.add_node(**node)

    def report_state():
        state = {"address": cluster.address, "head": cluster.head_node.node_id,
                 "workers": [n.node_id for n in cluster.worker_nodes]}
        print("CLUSTER " + json.dumps(state), flush=True)

    report_state()
    for line in sys.stdin:
        if line.strip() == "kill-worker":  # the whole node at once, as when a machine dies
            cluster.remove_node(next(iter(cluster.worker_nodes)), allow_graceful=False)
        elif line.strip() == "add-worker":
            cluster.add_node(**node)  # returns once the node has registered
        elif line.strip() == "stop":
            break
        report_state()
    cluster.shutdown()


if __name__ == "__main__" and sys.argv[1:2] == ["cluster"]:
    cluster_main(sys.argv[2])
