"""Faults that would lose or mix results: each is refused (exit 2, nothing deleted) or handled cleanly.
The fast ones run the real CLI in-process up to the point where Ray would start; the slow ones run real
studies through the real CLI and real Ray Tune."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from hpo import Study
from hpo.diskspace import disk_full
from hpo.plan import RunOptions
from hpo.run import StopSignals, main, plan
from hpo.studydir import StudyLock
from test_run import refused

ROOT = Path(__file__).resolve().parents[1]


def study_file(folder: Path, name: str = "s", space: str = '{"lr": 0.05}', extra: str = "") -> Path:
    path = folder / f"{name}_study.py"
    path.write_text("from ray import tune\nfrom hpo import Study\n\n" + textwrap.dedent(f"""
        study = Study(name={name!r}, dataset="mnist", model="mnist_cnn", space={space}, epochs=2{extra})
    """))
    return path


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err + captured.out


# ---------------------------------------------------------------- data loss

@pytest.mark.parametrize("name", ["..", ".", ".hidden"])
def test_dot_names_are_refused_and_nothing_is_deleted(name, tmp_path, capsys, fake_mnist_dir):
    results = tmp_path / "project" / "results"
    (results / "other_study" / "report").mkdir(parents=True)
    keep = results / "other_study" / "report" / "trials.csv"
    keep.write_text("precious\n")
    path = tmp_path / "dots.py"
    path.write_text(f"from hpo import Study\nstudy = Study(name={name!r}, dataset='mnist', model='fc2')\n")
    code, output = run_cli(capsys, path, "--results", results, "--data-dir", fake_mnist_dir, "--overwrite")
    assert code == 2 and "'name'" in output and "starts with a letter or digit" in output
    assert keep.read_text() == "precious\n" and (tmp_path / "project").is_dir()


def test_overwrite_refuses_a_study_folder_that_is_a_symlink(tmp_path, capsys, fake_mnist_dir):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("x")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "s").symlink_to(elsewhere)
    code, output = run_cli(capsys, study_file(tmp_path), "--results", tmp_path / "results", "--data-dir",
                           fake_mnist_dir, "--overwrite")
    assert code == 2 and "is a symbolic link" in output and "Traceback" not in output
    assert (elsewhere / "precious").read_text() == "x" and (tmp_path / "results" / "s").is_symlink()


def test_overwrite_deletes_the_study_folder_and_nothing_beside_it(tmp_path, fake_mnist_dir):
    results = tmp_path / "results"
    for folder in ("s", "s2", "s.old"):
        (results / folder).mkdir(parents=True)
        (results / folder / "file").write_text("x")
    p = plan(RunOptions(str(study_file(tmp_path)), results=str(results), data_dir=str(fake_mnist_dir),
                        overwrite=True))
    from hpo.studydir import prepare_study_dir
    prepare_study_dir(p)
    assert not (results / "s").exists() and (results / "s2" / "file").exists() and (results / "s.old" / "file").exists()


# ---------------------------------------------------------------- refused before Ray starts

def test_results_that_is_a_file_is_refused(tmp_path, capsys, fake_mnist_dir):
    results = tmp_path / "results"
    results.write_text("not a folder")
    code, output = run_cli(capsys, study_file(tmp_path), "--results", results, "--data-dir", fake_mnist_dir)
    assert code == 2 and "is a file, not a folder" in output and "Traceback" not in output


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_results_is_refused(tmp_path, capsys, fake_mnist_dir):
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o500)
    try:
        code, output = run_cli(capsys, study_file(tmp_path), "--results", results, "--data-dir", fake_mnist_dir)
    finally:
        results.chmod(0o700)
    assert code == 2 and "not writable" in output


@pytest.mark.parametrize("option, value", [("--cpus-per-trial", 10_000), ("--gpus-per-trial", 64)])
def test_more_resources_per_trial_than_the_machine_has_is_refused_before_deleting(option, value, tmp_path, capsys,
                                                                                 fake_mnist_dir):
    results = tmp_path / "results"
    (results / "s").mkdir(parents=True)
    (results / "s" / "old").write_text("x")
    code, output = run_cli(capsys, study_file(tmp_path), "--results", results, "--data-dir", fake_mnist_dir,
                           option, value, "--overwrite")
    assert code == 2 and option in output and "this machine has" in output
    assert (results / "s" / "old").exists()  # --overwrite deletes only for a run that starts


@pytest.mark.parametrize("space, expected", [
    ('{"val_fraction": 0.001}', ["val_fraction 0.001", "empty validation"]),   # 300 images: 0 for validation
    ('{"val_fraction": 0.999}', ["val_fraction 0.999", "empty training"]),
    ('{"batch_size": tune.grid_search([64, 1024])}', ["batch_size 1024", "larger than the training split"]),
])
def test_splits_and_batch_sizes_are_checked_against_the_data(space, expected, tmp_path, capsys, fake_mnist_dir):
    code, output = run_cli(capsys, study_file(tmp_path, space=space), "--results", tmp_path / "r",
                           "--data-dir", fake_mnist_dir)
    assert code == 2 and all(e in output for e in expected), output
    assert not (tmp_path / "r" / "s").exists()


@pytest.mark.parametrize("space, expected", [
    ('{"lr": math.inf}', "'lr' has value inf"),
    ('{"weight_decay": float("inf")}', "'weight_decay' has value inf"),
    ('{"batch_size": tune.sample_from(lambda spec: -8)}', "tune.sample_from that gave -8"),
    ('{"optimizer": tune.sample_from(lambda spec: "adan")}', "tune.sample_from that gave 'adan'"),
])
def test_values_no_trial_could_use_are_refused_at_validation(space, expected, tmp_path, capsys):
    path = study_file(tmp_path, space=space)
    path.write_text("import math\n" + path.read_text())
    code, output = run_cli(capsys, path, "--results", tmp_path / "r")
    assert code == 2 and expected in output, output


def test_a_data_dir_that_does_not_exist_never_falls_back_silently(tmp_path, capsys, fake_mnist_dir, monkeypatch):
    monkeypatch.setenv("HPO_DATA_DIR", str(fake_mnist_dir))  # the dataset is there...
    code, output = run_cli(capsys, study_file(tmp_path), "--results", tmp_path / "r",
                           "--data-dir", tmp_path / "typo")  # ...but this is what the user asked for
    assert code == 2 and "typo does not exist" in output and str(fake_mnist_dir) in output


def test_study_json_records_which_files_were_read(tmp_path, fake_mnist_dir):
    p = plan(RunOptions(str(study_file(tmp_path)), results=str(tmp_path / "r"), data_dir=str(fake_mnist_dir)))
    assert p.data["folder"] == str(fake_mnist_dir / "mnist") and p.data["train_images"] == 300
    assert p.record()["data"] == {"dataset": "mnist", "train_images": 300, "test_images": 100}


# ---------------------------------------------------------------- one run at a time

def test_a_second_run_of_a_running_study_is_refused_and_told_who_holds_it(tmp_path, capsys, fake_mnist_dir):
    path = study_file(tmp_path)
    p = plan(RunOptions(str(path), results=str(tmp_path / "r"), data_dir=str(fake_mnist_dir)))
    # The lock is an flock: another process's run holds it. A child process stands in for it.
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from hpo.studydir import StudyLock
        with StudyLock(__import__("pathlib").Path({str(p.lock_path)!r})):
            print("held", flush=True)
            time.sleep(60)
    """)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, output = run_cli(capsys, path, "--results", tmp_path / "r", "--data-dir", fake_mnist_dir)
        assert code == 2 and "running already" in output and f"process {holder.pid}" in output
    finally:
        holder.kill()
        holder.wait()
    with StudyLock(p.lock_path):  # free again once that process is gone
        pass
    assert not p.lock_path.exists()


# ---------------------------------------------------------------- --resume restores what it claims to

def fake_started_run(p) -> Path:
    """What a run leaves before Ray writes anything more: tuner.pkl and the report's study.json."""
    (p.study_dir / "experiment").mkdir(parents=True)
    (p.study_dir / "experiment" / "tuner.pkl").write_bytes(b"")
    (p.study_dir / "report").mkdir()
    (p.study_dir / "report" / "study.json").write_text(json.dumps(
        {**p.record(), "command": "python -m hpo.run the-original-command"}, default=str))
    return p.study_dir


@pytest.mark.parametrize("change, expected", [
    (["--set", "epochs=3"], "study.epochs was 2, now 3"),
    (["--set", "lr=0.01"], "study.space.lr was 0.05, now 0.01"),
    (["--smoke"], "smoke was False, now True"),
    (["--set", "dataset=fashion_mnist"], "study.dataset was 'mnist', now 'fashion_mnist'"),
])
def test_resume_of_a_study_started_differently_is_refused(change, expected, tmp_path, capsys, fake_mnist_dir):
    path = study_file(tmp_path)
    options = RunOptions(str(path), results=str(tmp_path / "r"), data_dir=str(fake_mnist_dir))
    fake_started_run(plan(options))
    code, output = run_cli(capsys, path, "--results", tmp_path / "r", "--data-dir", fake_mnist_dir, "--resume",
                           *change)
    assert code == 2 and expected in output and "the-original-command" in output, output


def test_resume_refuses_a_damaged_experiment_state(tmp_path, capsys, fake_mnist_dir):
    path = study_file(tmp_path)
    study_dir = fake_started_run(plan(RunOptions(str(path), results=str(tmp_path / "r"),
                                                 data_dir=str(fake_mnist_dir))))
    (study_dir / "experiment" / "experiment_state-2026-11-26_10-00-00.json").write_text('{"trial_data": [["cut')
    code, output = run_cli(capsys, path, "--results", tmp_path / "r", "--data-dir", fake_mnist_dir, "--resume")
    assert code == 2 and "experiment_state-2026-11-26_10-00-00.json" in output and "damaged" in output


@pytest.mark.parametrize("how", ["--address", "RAY_ADDRESS"])
def test_a_dead_cluster_address_is_one_paragraph_naming_where_it_came_from(how, tmp_path, capsys, monkeypatch,
                                                                          fake_mnist_dir):
    """Ray's own client waits in silence at a dead address; a login node's RAY_ADDRESS is a common one."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    args = [study_file(tmp_path), "--results", tmp_path / "r", "--data-dir", fake_mnist_dir]
    if how == "--address":
        args += ["--address", "127.0.0.1:1"]
    else:
        monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    started = time.monotonic()
    code, output = run_cli(capsys, *args)
    assert code == 2 and "No Ray cluster answers at 127.0.0.1:1" in output, output
    assert time.monotonic() - started < 60  # not Ray's minutes of waiting
    assert ("from --address" in output) == (how == "--address")
    assert ("from $RAY_ADDRESS" in output and "unset RAY_ADDRESS" in output) == (how == "RAY_ADDRESS")
    assert not (tmp_path / "r" / "s").exists()
    code, output = run_cli(capsys, *args[:5], "--address", "head-node")
    assert code == 2 and "'head-node' (from --address) is not HOST:PORT" in output


def test_a_full_disk_is_recognised_through_the_errors_that_wrap_it():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise RuntimeError("Tune failed to save the experiment state") from e
    except RuntimeError as wrapped:
        assert disk_full(wrapped)
    assert not disk_full(RuntimeError("something else")) and not disk_full(None)


# ---------------------------------------------------------------- real runs

def start(args, results: Path, prefix=()) -> subprocess.Popen:
    """hpo.run (after `prefix`, e.g. GNU timeout) in a process group of its own, as a Slurm job step
    or a terminal would start it: a signal to that group reaches no test process."""
    return subprocess.Popen([*prefix, sys.executable, "-m", "hpo.run", *map(str, args)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def children(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc)."""
    try:
        found = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return found + [d for c in found for d in children(c)]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def wait_for_a_finished_trial(driver, trials_csv: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not (trials_csv.exists() and (pd.read_csv(trials_csv)["outcome"] == "completed").any()):
        assert time.time() < deadline and driver.poll() is None, "no trial finished in time"
        time.sleep(0.5)


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_a_moved_study_resumes_where_it_is(tmp_path, fake_mnist_dir):
    """SIGTERM (SLURM, docker stop, timeout) stops as Ctrl-C does; the stopped study, copied elsewhere,
    resumes there (not into the original folder), and refuses a resume with a changed study."""
    path = study_file(tmp_path, name="moved", space='{"lr": tune.grid_search([0.01, 0.02, 0.03, 0.04])}',
                      extra=", seeds=1")
    first = tmp_path / "first"
    driver = start([path, "--results", first, "--data-dir", fake_mnist_dir, "--max-concurrent", 1,
                    "--no-analysis", "--set", "epochs=15"], first)
    wait_for_a_finished_trial(driver, first / "moved" / "report" / "trials.csv")
    os.killpg(driver.pid, signal.SIGTERM)  # the whole group, as Slurm's time limit and scancel do
    output, _ = driver.communicate(timeout=180)
    assert driver.returncode == 130, output[-3000:]
    assert "Traceback" not in output and "--resume" in output and "--set epochs=15" in output
    assert "Stopped by SIGTERM before the end" in output and "Failed to connect to GCS" not in output

    second = tmp_path / "second"
    shutil.copytree(first / "moved", second / "moved")
    original = (first / "moved" / "report" / "trials.csv").read_text()
    for epochs in (16, 3):  # refused before Ray starts (in this process: no start-up to wait for)
        code, err = refused(path, "--results", second, "--data-dir", fake_mnist_dir, "--resume", "--set",
                            f"epochs={epochs}", "--no-analysis")
        assert code == 2 and f"study.epochs was 15, now {epochs}" in err, err
    # the same settings: it continues, in the copy
    resumed = subprocess.run([sys.executable, "-m", "hpo.run", str(path), "--results", str(second), "--data-dir",
                              str(fake_mnist_dir), "--resume", "--set", "epochs=15", "--no-analysis",
                              "--max-concurrent", "2"], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    trials = pd.read_csv(second / "moved" / "report" / "trials.csv")
    assert len(trials) == 4 and set(trials["outcome"]) == {"completed"}
    assert set(trials["layout"]) == {"channels_last"}  # the default on a CPU, recorded with every trial
    assert set(trials["step"]) == {"eager"}  # no CUDA graph on a CPU
    assert "Done: 4 trials completed" in resumed.stdout
    assert (first / "moved" / "report" / "trials.csv").read_text() == original  # the original is untouched
    study_json = json.loads((second / "moved" / "report" / "study.json").read_text())
    assert str(second / "moved") in study_json["experiment_path"]
    assert all(isinstance(c, str) and (second / "moved" / c / "state.pt").is_file() for c in trials["checkpoint"])


@pytest.mark.slow
def test_a_hangup_through_gnu_timeout_stops_cleanly_and_a_second_ctrl_c_stops_only_the_analysis(
        tmp_path, fake_mnist_dir):
    """GNU timeout passes a signal it gets to the driver and then to its whole process group, as Slurm,
    systemd and a closed terminal signal every process of a job. Ray's own processes live in another
    session, so the driver stops them cleanly (and they end with it). A second Ctrl-C during the
    end-of-study analysis stops the analysis only and says how to write the report."""
    import threading

    path = study_file(tmp_path, name="hangup", space='{"lr": tune.grid_search([0.01, 0.02, 0.03])}',
                      extra=", seeds=1")
    results = tmp_path / "r"
    timeout = start([path, "--results", results, "--data-dir", fake_mnist_dir, "--max-concurrent", 1,
                     "--set", "epochs=300"], results, prefix=("timeout", "600"))  # seconds a trial: still running
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(timeout.stdout), daemon=True)
    reader.start()
    wait_for_a_finished_trial(timeout, results / "hangup" / "report" / "trials.csv")
    driver, *ray_processes = children(timeout.pid)
    names = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in ray_processes if alive(pid)}
    assert {"gcs_server", "raylet"} <= set(names.values()), names
    assert all(os.getsid(pid) != os.getsid(driver) for pid, name in names.items() if name == "gcs_server")

    timeout.send_signal(signal.SIGHUP)
    hung_up = time.monotonic()
    deadline = hung_up + 120
    while not any("Stopped by SIGHUP before the end" in line for line in lines):
        assert time.monotonic() < deadline and timeout.poll() is None, "".join(lines)[-3000:]
        time.sleep(0.2)
    time.sleep(max(0.5, hung_up + StopSignals.REPEAT_S + 0.5 - time.monotonic()))  # the analysis has begun
    os.kill(driver, signal.SIGINT)  # a second Ctrl-C
    assert timeout.wait(timeout=120) == 130, "".join(lines)[-3000:]  # timeout passes the driver's status on
    reader.join(timeout=10)
    output = "".join(lines)
    assert "Traceback" not in output and "Failed to connect to GCS" not in output, output[-3000:]
    assert "hpo.run" in output and "--resume" in output and "--set epochs=300" in output
    assert "The analysis was stopped" in output and f"python -m analysis {results / 'hangup'}" in output
    trials = pd.read_csv(results / "hangup" / "report" / "trials.csv")
    assert 1 <= (trials["outcome"] == "completed").sum() < 3  # stopped before its end
    deadline = time.monotonic() + 30  # Ray's processes end with the driver, though not in its group
    while any(alive(pid) for pid in names) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [names[pid] for pid in names if alive(pid)]


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A real tmpfs of `size` at `folder` (root only; the test is skipped where mounting is not allowed)."""
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
def test_a_nearly_full_disk_stops_the_study_resumably_and_the_resume_finishes_it(tmp_path, fake_mnist_dir):
    """Filled to less than a step writes, the study stops while Ray Tune can still save its record; on a
    larger disk the printed --resume finishes it with every trial and epoch exactly once."""
    path = study_file(tmp_path, name="full", space='{"lr": tune.grid_search([0.01, 0.02, 0.03])}',
                      extra=", seeds=1")
    with small_disk(tmp_path / "disk", "16m") as disk:
        results = disk / "results"
        args = [path, "--results", results, "--data-dir", fake_mnist_dir, "--max-concurrent", 1,
                "--set", "epochs=100", "--no-analysis"]
        driver = start(args, results)
        study = results / "full"
        wait_for_a_finished_trial(driver, study / "report" / "trials.csv")
        # one step writes a checkpoint, Ray's record and the report: leave a little more than that
        checkpoint = max(f.stat().st_size for f in study.glob("experiment/*/checkpoint_*/state.pt"))
        record = sum(f.stat().st_size for f in (study / "experiment").iterdir() if f.is_file())
        report = sum(f.stat().st_size for f in (study / "report").iterdir())
        room = checkpoint + record + report + 64 * 1024
        with open(disk / "filler", "wb") as f:
            f.write(b"\0" * max(0, shutil.disk_usage(disk).free - room))
        output, _ = driver.communicate(timeout=180)
        assert driver.returncode == 1, output[-3000:]
        assert "Traceback" not in output and "is nearly full" in output, output[-3000:]
        assert "Once there is space again, continue with: python -m hpo.run" in output and "--resume" in output
        assert not list((study / "report").glob("*.tmp"))
        trials = pd.read_csv(study / "report" / "trials.csv")
        assert set(trials["outcome"]) != {"completed"} and len(trials) == 3

        subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)  # the disk enlarged
        resumed = subprocess.run([sys.executable, "-m", "hpo.run", *map(str, args), "--resume"], cwd=ROOT,
                                 capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                 timeout=600)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        trials = pd.read_csv(study / "report" / "trials.csv")
        epochs = pd.read_csv(study / "report" / "epochs.csv")
    assert len(trials) == 3 and set(trials["outcome"]) == {"completed"}
    for trial_id, rows in epochs.groupby("trial_id"):
        assert sorted(rows["epoch"]) == list(range(1, 101)), (trial_id, sorted(rows["epoch"]))


def test_stop_signals_are_ctrl_c_once_outside_ray_tune():
    """SIGTERM and SIGHUP raise KeyboardInterrupt where Ray Tune's handler is not installed; a repeat
    within REPEAT_S (GNU timeout signals the driver, then its group) is the same stop."""
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)  # a repeat: ignored
        time.sleep(0.2)
        stop.last -= StopSignals.REPEAT_S
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(1)
        assert stop.received == ["SIGTERM", "SIGHUP"]
    assert signal.getsignal(signal.SIGTERM) == before


def test_printed_commands_are_quoted_for_a_shell():
    options = RunOptions("my studies/it's.py", results="results dir", overrides=("optimizer=sgd",))
    assert options.command(resume=True) == \
        "python -m hpo.run 'my studies/it'\"'\"'s.py' --resume --results 'results dir' --set optimizer=sgd"


@pytest.mark.slow
def test_a_deterministic_error_fails_the_trial_after_one_retry_not_max_failures(tmp_path, fake_mnist_dir):
    """Real Ray Tune, the real trainable and report writer: a data file that breaks after the run's own
    check fails every attempt the same way; the first retry sees that and the trial ends `failed`."""
    import ray
    from ray import tune

    from hpo.report import ReportWriter
    from hpo.trainable import RunSettings, tune_trainable

    images = fake_mnist_dir / "mnist" / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:100])  # cut short
    study = Study(name="same_error", dataset="mnist", model="mnist_cnn", epochs=2)
    writer = ReportWriter(study, tmp_path / "same_error", str(tmp_path / "same_error" / "experiment"), {})
    settings = RunSettings("mnist", "mnist_cnn", 2, str(fake_mnist_dir))
    # "local": a new Ray, never an earlier `ray start` whose address file was left in /tmp/ray
    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        results = tune.Tuner(tune.with_parameters(tune_trainable, settings=settings), param_space={},
                             run_config=tune.RunConfig(name="experiment", storage_path=str(tmp_path / "same_error"),
                                                       callbacks=[writer], verbose=0,
                                                       failure_config=tune.FailureConfig(max_failures=5))).fit()
    finally:
        ray.shutdown()
    trials = pd.read_csv(tmp_path / "same_error" / "report" / "trials.csv")
    assert trials.loc[0, "outcome"] == "failed"
    assert "the same error on a retry" in trials.loc[0, "error"] and "train-images-idx3-ubyte" in trials.loc[0, "error"]
    assert results[0].metrics["error"] == trials.loc[0, "error"]
    attempts = json.loads((Path(results[0].path) / "last_error.json").read_text())
    assert attempts["epoch"] == 0


@pytest.mark.parametrize("extra, expected", [
    (', metric=["val_acc", "params"], mode=["max", "min"], search="optuna", scheduler="asha"',
     "cannot use scheduler='asha'"),
    (', metric=["val_acc", "params"], mode="max", search="optuna"', "a list of the same length"),
    (', metric=["val_acc", "paramz"], mode=["max", "min"], search="optuna"', "Did you mean 'params'"),
    (', metric=["val_acc", "params"], mode=["max", "min"], search="grid"', "needs search='random' or 'optuna'"),
])
def test_multi_objective_studies_are_checked(extra, expected, tmp_path, capsys):
    path = study_file(tmp_path, space='{"lr": tune.loguniform(1e-3, 1e-1)}', extra=extra)
    code, output = run_cli(capsys, path, "--results", tmp_path / "r")
    assert code == 2 and expected in output, output


def test_the_resume_command_keeps_what_each_trial_gets():
    options = RunOptions("s.py", results="r", cpus_per_trial=2, gpus_per_trial=0.5, max_concurrent=4,
                         max_failures=0, overrides=("lr=0.1",), smoke=True)
    assert options.command(resume=True) == ("python -m hpo.run s.py --resume --results r --set lr=0.1 --smoke "
                                            "--cpus-per-trial 2 --gpus-per-trial 0.5 --max-concurrent 4 "
                                            "--max-failures 0")
    assert RunOptions("s.py").command() == "python -m hpo.run s.py"


def test_a_study_started_on_a_cluster_resumes_locally(tmp_path, fake_mnist_dir):
    """On a cluster the driver reads no data (no image counts recorded): that is no difference."""
    from hpo.studydir import check_resumable

    p = plan(RunOptions(str(study_file(tmp_path)), results=str(tmp_path / "r"), data_dir=str(fake_mnist_dir)))
    study_dir = fake_started_run(p)
    record = json.loads((study_dir / "report" / "study.json").read_text())
    record["data"] = {"dataset": "mnist", "train_images": None, "test_images": None}
    (study_dir / "report" / "study.json").write_text(json.dumps(record))
    check_resumable(p)  # no HpoError


def test_a_damaged_download_never_falls_back_to_another_folder_s_checkpoint(tmp_path):
    """A checkpoint from s3:// is downloaded to a temporary folder: its neighbours are other trials'."""
    from hpo import HpoError
    from hpo.checkpoints import load_newest_readable, save_state

    (tmp_path / "checkpoint_000003").mkdir()
    another_trials = {"epoch": 3, "config": {"lr": 9}, "settings": {"model": "fc2"}}
    save_state(another_trials, tmp_path / "checkpoint_000003")
    (tmp_path / "checkpoint_tmp_1f2e").mkdir()
    (tmp_path / "checkpoint_tmp_1f2e" / "state.pt").write_bytes(b"cut")
    with pytest.raises(HpoError, match="checkpoint_tmp_1f2e"):
        load_newest_readable(tmp_path / "checkpoint_tmp_1f2e")
