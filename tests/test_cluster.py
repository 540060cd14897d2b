"""Studies on real Ray clusters, all on 127.0.0.1 (marker `cluster`).

- a `ray start --head` cluster, and a smoke study submitted with the real `ray job submit`, as the README says;
- two nodes of one CPU each (Ray's own `ray.cluster_utils.Cluster`): trials run on both; the worker
  node is killed mid-study and its trial resumes from its checkpoint on another node; the driver is
  SIGKILLed mid-study and `--resume` finishes the study;
- the sockets of every Ray process started here are on the loopback interface only.

Every Ray here starts with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (docs/ray-notes.md), on free ports and
in its own temp dir, and is stopped by PID (never `ray stop`: it stops every Ray on the machine). The
two-node cluster lives in a child process running this file (`python tests/test_cluster.py cluster DIR`),
so `import ray` happens there, with the variable set, and never in the pytest process.
(tests/test_run.py has the killed-driver test for the embedded Ray.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
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

from conftest import make_fake_datasets

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.cluster

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

@pytest.fixture(scope="module")
def slow_data(tmp_path_factory) -> Path:
    """Fake MNIST big enough for about a second per epoch on one CPU: a node can die mid-trial."""
    return make_fake_datasets(tmp_path_factory.mktemp("data"), n_train=3000, n_test=300, datasets=("mnist",))


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


@pytest.fixture(scope="module")
def two_nodes():
    cluster = TwoNodes()
    try:
        cluster.wait_until_up()
        yield cluster
    finally:
        cluster.stop()


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


# ---------------------------------------------------------------- tests

def test_loopback_setting_is_made_for_local_and_loopback_clusters_only(monkeypatch):
    from hpo.env import keep_ray_on_loopback

    for address, loopback in ((None, True), ("127.0.0.1:6379", True), ("localhost:6379", True),
                              ("10.1.2.3:6379", False), ("head.example.org:6379", False)):
        monkeypatch.setattr(os, "environ", {})  # a fresh environment each time; the real one is untouched
        keep_ray_on_loopback(address)
        assert (os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0") == loopback, address


@pytest.mark.slow
def test_embedded_ray_listens_on_loopback_only(tmp_path, fake_mnist_dir):
    study = write_study(tmp_path, "sockets", [0.01], epochs=2)
    driver = start_driver(study, "--results", tmp_path / "results", "--data-dir", fake_mnist_dir)
    listening, remote, names = set(), set(), set()
    try:
        while driver.poll() is None:  # sample the sockets of the driver and every Ray process it started
            procs = processes_of([driver.pid])
            found = sockets(procs)
            listening |= found[0]
            remote |= found[1]
            for p in procs:
                try:
                    names.add(p.name())
                except Exception:
                    pass
            time.sleep(0.5)
    finally:
        out = finish(driver, timeout=240)
    assert {"gcs_server", "raylet"} <= names, f"Ray's processes were not seen running: {sorted(names)}"
    assert_loopback_only(listening, remote)
    assert "Done: 1 trials completed" in out


@pytest.mark.slow
def test_ray_job_submit_runs_a_study_as_the_readme_says(tmp_path, fake_mnist_dir):
    temp_dir, port, dashboard = short_temp_dir(), free_port(), free_port()
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    ray = str(Path(sys.executable).parent / "ray")
    # As the README says: token authentication on, Ray's `uv run` hook off (this runs under `uv run pytest`)
    env = ray_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    head = subprocess.Popen(
        [ray, "start", "--head", "--port", str(port), "--dashboard-host", "127.0.0.1", "--dashboard-port",
         str(dashboard), "--temp-dir", temp_dir, "--num-cpus", "2", "--disable-usage-stats",
         # defaults that are fixed ports (10001, 52365): free ones, so other Ray instances here do not collide
         "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
         "--block"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    storage = tmp_path / "storage"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:  # the dashboard (and the job API) answers last
            assert head.poll() is None, head.stdout.read()[-3000:]
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", dashboard)) == 0:
                    break
            time.sleep(1)
        else:
            pytest.fail("ray start --head did not come up")
        # The README's command (the `ray` of this environment, as `uv run ray` would find it)
        submit = [ray, "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", ".",
                  "--", "python", "-m", "hpo.run", "studies/mnist_batchsize.py", "--smoke",
                  "--storage", str(storage), "--data-dir", str(fake_mnist_dir)]

        refused = subprocess.run([ray, "job", "list", "--address", f"http://127.0.0.1:{dashboard}"], cwd=ROOT,
                                 env=ray_env(), capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "uthentication" in refused.stdout + refused.stderr  # no token, no entry

        job = subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
        output = job.stdout + job.stderr
        assert job.returncode == 0 and "succeeded" in output, output[-5000:]

        # Ray's copy of the working directory: the project without .venv/, results/ or data/ (.gitignore)
        packages = list(Path(temp_dir).glob("session_*/runtime_resources/working_dir_files/_ray_pkg_*/"))
        assert packages and all((p / "hpo" / "run.py").is_file() for p in packages)
        for ignored in (".venv", "results", "data"):
            assert not any((p / ignored).exists() for p in packages), ignored
        # every process of the cluster, still up, listens on and talks to 127.0.0.1 only
        assert_loopback_only(*sockets(processes_of([head.pid], marker=temp_dir)))
    finally:
        stop_processes(processes_of([head.pid], marker=temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)

    trials, epochs, meta = report(storage / "mnist_batchsize")
    assert len(trials) == 3 and set(trials["outcome"]) == {"completed"}  # smoke: 3 batch sizes, 2 epochs
    assert len(epochs) == 6 and meta["smoke"] and meta["ended"]
    assert (storage / "mnist_batchsize" / "report" / "report.html").is_file()  # the analysis ran in the job
    assert "Done: 3 trials completed" in output


@pytest.mark.slow
def test_a_lost_node_s_trials_resume_from_their_checkpoints_elsewhere(tmp_path, two_nodes, slow_data):
    epochs_per_trial = 8
    study = write_study(tmp_path, "lost_node", [0.01, 0.02, 0.03, 0.04], epochs=epochs_per_trial)
    storage = tmp_path / "storage"
    experiment = storage / "lost_node" / "experiment"
    lost = two_nodes.state["workers"][0][:12]
    driver = start_driver(study, "--address", two_nodes.address, "--storage", storage, "--data-dir", slow_data)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            # Two trials part-way at once: one on each node (1 CPU each), so the worker's has a checkpoint
            # and at least 4 epochs (seconds, more under load) left: it cannot finish before the kill lands.
            done = checkpoints_done(experiment)
            if sum(0 < n <= epochs_per_trial - 4 for n in done.values()) == 2:
                break
            assert driver.poll() is None, driver.stdout.read()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("two trials were never part-way at once")
        two_nodes.command("kill-worker")
        two_nodes.command("add-worker")  # a replacement joins, as an autoscaler would bring one
    finally:
        out = finish(driver, timeout=300)

    trials, epochs, meta = report(storage / "lost_node")
    assert len(trials) == 4 and set(trials["status"]) == {"TERMINATED"} and set(trials["outcome"]) == {"completed"}
    assert epochs.groupby("trial_id")["epoch"].apply(list).map(tuple).tolist() == [tuple(range(1, 9))] * 4
    results = results_by_trial(experiment)
    assert sorted(results) == sorted(trials["trial_id"])
    moved = []
    for trial_id, rows in results.items():
        assert [r["epoch"] for r in rows] == list(range(1, 9)), (trial_id, rows)  # no epoch run twice or lost
        nodes = [r["node"] for r in rows]
        if lost in nodes and nodes[-1] != lost:
            moved.append(trial_id)
            first_elsewhere = next(r for r in rows if r["node"] != lost)
            assert first_elsewhere["epoch"] > 1  # it went on from its checkpoint, not from scratch
    seen = {t: [(r["epoch"], r["node"]) for r in rows] for t, rows in results.items()}
    assert moved, f"no trial of the lost node {lost} was resumed elsewhere: {seen}\n{out[-3000:]}"


@pytest.mark.slow
def test_a_killed_driver_resumes_on_the_cluster(tmp_path, two_nodes, slow_data):
    """Also: trials of one study run on both nodes; --storage as a URI (file:// here; s3:// and gs://
    go through the same pyarrow calls) holds the experiment, and the report written locally is copied there."""
    study = write_study(tmp_path, "driver", [0.01, 0.02, 0.03, 0.04], epochs=3)
    nodes = {n[:12] for n in [two_nodes.state["head"], *two_nodes.state["workers"]]}
    storage, results = tmp_path / "storage", tmp_path / "results"
    study_dir = results / "driver"
    args = ["--address", two_nodes.address, "--storage", f"file://{storage}", "--results", results,
            "--data-dir", slow_data]
    driver = start_driver(study, *args)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # kill the driver once a trial has finished and others run
            trials_csv = study_dir / "report" / "trials.csv"
            if trials_csv.exists() and (pd.read_csv(trials_csv)["outcome"] == "completed").sum() >= 1:
                break
            assert driver.poll() is None, driver.stdout.read()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("no trial finished in time")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver only: the cluster stays up
        driver.communicate()
    before, before_epochs, _ = report(study_dir)
    done_before = set(before.loc[before["outcome"] == "completed", "trial_id"])
    assert len(done_before) < 4

    again = finish(start_driver(study, *args, "--resume"), timeout=300)
    trials, epochs, meta = report(study_dir)
    assert sorted(trials["config/lr"]) == [0.01, 0.02, 0.03, 0.04]  # the same trials as a run not interrupted
    assert set(before["trial_id"]) <= set(trials["trial_id"]) and len(trials) == 4
    assert set(trials["status"]) == {"TERMINATED"} and set(trials["outcome"]) == {"completed"}
    assert all(f"{t} epoch" not in again for t in done_before)  # finished trials were not re-run
    # 1 CPU per node: trials running side by side run on different nodes, so both nodes ran some
    assert set(trials["node"]) == nodes
    assert epochs.groupby("trial_id")["epoch"].apply(list).map(tuple).tolist() == [(1, 2, 3)] * 4
    kept = before_epochs[before_epochs["trial_id"].isin(done_before)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, epochs[epochs["trial_id"].isin(done_before)].reset_index(drop=True))
    assert meta["ended"]
    assert (storage / "driver" / "experiment" / "tuner.pkl").is_file()
    copied = storage / "driver" / "report"
    assert (copied / "epochs.csv").read_text() == (study_dir / "report" / "epochs.csv").read_text()


if __name__ == "__main__" and sys.argv[1:2] == ["cluster"]:
    cluster_main(sys.argv[2])
