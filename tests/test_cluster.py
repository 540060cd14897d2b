"""Studies on real Ray clusters, all on 127.0.0.1 (marker `cluster`).

- a `ray start --head` cluster, and a smoke study submitted with the real `ray job submit`, as the README says;
- two nodes of one CPU each (Ray's own `ray.cluster_utils.Cluster`): trials run on both; the worker
  node is killed mid-study and its trial resumes from its checkpoint on another node; the driver is
  SIGKILLed mid-study and `--resume` finishes the study;
- the sockets of every Ray process started here are on the loopback interface only.

The plumbing (ports, Ray's processes and sockets, the two-node cluster in a child process, drivers)
is in tests/ray_cluster.py, so these read as tests.
(tests/test_run.py has the killed-driver test for the embedded Ray.)
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest


from ray_cluster import (ROOT, assert_loopback_only, checkpoints_done, finish, free_port, processes_of, ray_env,
                         report, results_by_trial, short_temp_dir, sockets, start_driver, stop_processes, write_study)

pytestmark = pytest.mark.cluster

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
        # hpo.run joining without the token: one paragraph that names it, no traceback
        no_token = subprocess.run([sys.executable, "-m", "hpo.run", "studies/mnist_batchsize.py", "--smoke",
                                   "--address", f"127.0.0.1:{port}", "--results", str(tmp_path / "r")], cwd=ROOT,
                                  env=ray_env(RAY_ENABLE_UV_RUN_RUNTIME_ENV="0"), capture_output=True, text=True,
                                  timeout=180)
        assert no_token.returncode == 2, no_token.stdout[-3000:] + no_token.stderr[-3000:]
        assert "Could not join the Ray cluster at 127.0.0.1" in no_token.stderr and "Traceback" not in no_token.stderr
        assert "export RAY_AUTH_MODE=token" in no_token.stderr

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
    assert "Done: 3 trials completed" in output and "Joined the Ray cluster at" in output


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
