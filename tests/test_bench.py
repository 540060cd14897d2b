"""The benchmark suite (bench/) runs and reports what it measured: no wall-clock thresholds here (the
machine may be busy), only that each comparison runs both sides on the same data and writes its figures."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import datapath, threads
from bench.__main__ import FIGURES, main, table

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def _bench(args, env_extra=None, timeout=240):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_seeds_loop_sees_exactly_the_trainables_images(fake_mnist_dir):
    from hpo.trainable import RunSettings, Trial

    settings = RunSettings("fashion_mnist", "lenet5", 1, str(fake_mnist_dir), None, 100)
    trial = Trial({**datapath.CONFIG, "batch_size": 64}, settings, device="cpu")
    seeds = datapath.SeedsLoop(trial, 64)
    n = len(trial.data.train)
    assert len(seeds.loader.dataset) == n
    assert sum(len(y) for _, y in seeds.loader) == n
    # The seeds' transform of the recovered uint8 images gives back the trial's own normalised images.
    x0, y0 = seeds.loader.dataset[0]
    assert torch.allclose(x0, trial.data.train.images[0].cpu(), atol=1e-5)
    assert y0 == int(trial.data.train.labels[0])


@pytest.mark.realdata
@pytest.mark.skipif(not FASHION.exists(), reason="needs Debian's dataset-fashion-mnist")
def test_data_path_comparison_on_a_real_subset():
    out = datapath.measure("cpu", batch_sizes=(64, 256), repeats=1, max_train=600)
    for bs in ("64", "256"):
        b = out["batch"][bs]
        assert b["images"] == 600  # the trial's training split, capped; the seeds' loop reads the same
        for key in ("trainable_epoch_s", "seeds_epoch_s", "speedup"):
            assert math.isfinite(b[key]) and b[key] > 0
        assert b["speedup"] == pytest.approx(b["seeds_epoch_s"] / b["trainable_epoch_s"])
    assert out["loader_speedup"] == min(out["batch"]["64"]["speedup"], out["batch"]["256"]["speedup"])


def test_threads_runs_the_trainable_cli_with_each_wait_policy(fake_mnist_dir):
    out = threads.measure(repeats=1, epochs=2, max_train=256, max_eval=50, data_dir=str(fake_mnist_dir),
                          variants=("passive", "active"))
    assert set(out["samples_per_s"]) == {"passive", "active"}
    assert all(math.isfinite(v) and v > 0 for v in out["samples_per_s"].values())
    assert out["speedup"] == pytest.approx(out["samples_per_s"]["passive"] / out["samples_per_s"]["active"])


def test_cli_writes_json_and_history_and_keeps_the_other_section(fake_mnist_dir, tmp_path):
    out, history = tmp_path / "latest.json", tmp_path / "history.jsonl"
    gpu = {"date": "2026-01-01T00:00:00+00:00", "hardware": {"gpu": "Test GPU"},
           "packing": {"gpu_packing_16x": 9.5}}
    out.write_text(json.dumps({"gpu": gpu}))  # an earlier GPU run: kept, not measured again here
    run = _bench(["--parts", "data", "--quick", "--out", str(out), "--history", str(history)],
                 {"HPO_DATA_DIR": str(fake_mnist_dir)})
    assert run.returncode == 0, run.stderr[-3000:]
    document = json.loads(out.read_text())
    assert set(FIGURES) == set(document["figures"])
    assert document["figures"]["loader_speedup"] > 0
    assert document["figures"]["trial_overhead_s"] is None  # not measured in this run
    assert document["gpu"] == gpu and document["figures"]["gpu_packing_16x"] == 9.5
    assert document["cpu"]["hardware"]["cpus"] >= 1 and "load_average" in document["cpu"]["hardware"]
    lines = history.read_text().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["figures"]["loader_speedup"] == document["figures"]["loader_speedup"]
    assert "loader_speedup" in run.stdout and "wrote" in run.stdout


def test_merge_takes_the_gpu_section_without_measuring(tmp_path, capsys):
    out, history, merged = tmp_path / "latest.json", tmp_path / "h.jsonl", tmp_path / "gpu.json"
    cpu = {"date": "x", "hardware": {"cpu": "Test CPU"}, "data": {"loader_speedup": 2.0}}
    out.write_text(json.dumps({"cpu": cpu}))
    merged.write_text(json.dumps({"gpu": {"date": "y", "hardware": {"gpu": "Test GPU"},
                                          "data": {"loader_speedup": 12.0}}}))
    assert main(["--parts", "", "--merge", str(merged), "--out", str(out), "--history", str(history)]) == 0
    document = json.loads(out.read_text())
    assert document["cpu"] == cpu
    assert document["figures"]["loader_speedup"] == 2.0 and document["figures"]["gpu_loader_speedup"] == 12.0
    assert "Test GPU" in capsys.readouterr().out


def test_a_run_of_some_parts_keeps_the_others():
    """`python -m bench --parts seedgroups` replaces that part of the CPU section and keeps the rest, with the
    date each part was measured."""
    from bench.__main__ import keep_unmeasured

    previous = {"cpu": {"date": "d1", "hardware": {"cpu": "A"}, "data": {"loader_speedup": 2.0},
                        "epoch": {"epoch_speedup_lenet5": 1.2}},
                "gpu": {"date": "g1", "data": {"loader_speedup": 12.0}}}
    now = {"cpu": {"date": "d2", "hardware": {"cpu": "A"}, "seedgroups": {"per_seed_speedup": 1.05}}}
    merged = keep_unmeasured(now, previous)
    assert merged["gpu"] == previous["gpu"]
    assert merged["cpu"]["data"] == {"loader_speedup": 2.0} and merged["cpu"]["seedgroups"]["per_seed_speedup"] == 1.05
    assert merged["cpu"]["part_dates"] == {"data": "d1", "epoch": "d1", "seedgroups": "d2"}
    assert merged["cpu"]["date"] == "d2"
    # and again: the dates are not a part of their own
    again = keep_unmeasured({"cpu": {"date": "d3", "fusedseeds": {"fused_seeds_speedup_4": 0.6}}}, merged)
    assert again["cpu"]["part_dates"] == {"data": "d1", "epoch": "d1", "seedgroups": "d2", "fusedseeds": "d3"}


def test_unknown_part_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--parts", "data,gpus", "--out", os.devnull, "--history", ""])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown part(s) gpus" in err and "threads" in err


def test_table_marks_missed_targets():
    text = table({"cpu": {"data": {"loader_speedup": 1.5}, "overhead": {"trial_overhead_s": 0.3},
                          "hardware": {"cpu": "Test CPU", "cpus": 2, "load_average": [3.0, 2.0, 1.0]}}})
    rows = {line.split()[0]: line for line in text.splitlines()}
    assert "NO" in rows["loader_speedup"].split()
    assert "yes" in rows["trial_overhead_s"].split()
    assert "not measured" in rows["gpu_packing_16x"]
    assert "load [3.0, 2.0, 1.0]" in text


def test_gpu_path_imports_neither_ray_nor_optuna(tmp_path):
    """The GPU part runs where Ray and Optuna may be missing: with both blocked it imports and, without
    CUDA, says it skipped."""
    code = ("import sys; sys.modules['ray'] = None; sys.modules['optuna'] = None\n"
            "import bench.gpu, bench.datapath, hpo.trainable, hpo.data, hpo.models\n"
            "from bench.__main__ import main\n"
            f"sys.exit(main(['--parts', 'gpu', '--quick', '--out', {str(tmp_path / 'g.json')!r}, '--history', '']))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    if not torch.cuda.is_available():
        assert "no CUDA device here; skipped" in run.stdout


def test_plain_loop_of_the_study_trains_every_configuration(fake_mnist_dir):
    from bench.study import run_loop

    trials = [{"config": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 64}},
              {"config": {"optimizer": "adam", "lr": 0.001, "batch_size": 128}}]
    out = run_loop(trials, epochs=2, data_dir=str(fake_mnist_dir), max_train=200, max_eval=50)
    assert len(out) == 2
    for t in out:
        assert len(t["epoch_end_s"]) == 2 and 0 < t["epoch_end_s"][0] <= t["epoch_end_s"][1]
        assert 0 <= t["best_val_acc"] <= 1


@pytest.mark.slow
def test_overhead_times_every_side_with_ray_set_up_as_hpo_run_sets_it(tmp_path):
    """Real Ray Tune, tiny sizes. Ray reads its environment when first imported: measured with Ray
    imported before hpo.run's settings, every worker went through Ray's `uv run` hook (seconds each)."""
    code = ("import json\nfrom bench import overhead\n"
            "r = overhead.measure(num_trials=2, repeats=1, default_trials=1, small_trials=1)\n"
            "from ray._private import ray_constants\n"
            "r['uv_hook'] = ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV\n"
            "print('RESULT', json.dumps(r))")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_UV_RUN_RUNTIME_ENV"}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT ", 1)[1])
    assert result["uv_hook"] is False
    samples = result["samples"]
    assert len(samples["toolkit_s"]) == len(samples["toolkit_small_s"]) == len(samples["default_per_trial_s"]) == 1
    assert len(samples["waited_for_quiet_s"]) == 4  # the warm-up study and the three timed ones
    assert result["trial_overhead_s"] > 0 and result["first_study_s"] > 0
    assert result["overhead_reduction"] == result["default_overhead_s"] / result["trial_overhead_s"]


def test_wait_until_quiet_gives_up_after_its_timeout():
    from bench.common import wait_until_quiet

    assert wait_until_quiet(busy_cpus=-1, timeout_s=0.3, interval_s=0.05) >= 0.3  # never quiet enough
    assert wait_until_quiet(busy_cpus=os.cpu_count() + 1, timeout_s=30, interval_s=0.05) < 30  # always quiet


def test_epoch_times_every_part_of_an_epoch_in_both_layouts(monkeypatch, tmp_path):
    """CIFAR-format and IDX files written by the bench itself: each model trains in the layout it names."""
    from bench import epoch

    monkeypatch.setattr(epoch, "fashion_data_dir", lambda: None)
    monkeypatch.setattr(epoch, "FASHION_DEBIAN", tmp_path / "absent")
    result = epoch.measure(repeats=1, max_train=128, max_eval=64, models=("lenet5", "cifar_cnn"))
    for name in ("lenet5", "cifar_cnn"):
        model = result["models"][name]
        for layout in ("channels_last", "nchw"):
            assert set(model[layout]) == {"train_s", "val_s", "test_s", "checkpoint_s", "epoch_s"}
            assert model[layout]["epoch_s"] == pytest.approx(sum(v for k, v in model[layout].items()
                                                                 if k != "epoch_s"))
        assert result[f"epoch_speedup_{name}"] == model["speedup"]["epoch_s"] > 0
        assert model["train_images"] <= 128


def test_packing_compares_one_two_thread_trial_with_two_one_thread_trials(fake_mnist_dir):
    out = threads.packing(repeats=1, epochs=2, max_train=256, max_eval=50, data_dir=str(fake_mnist_dir))
    one, two = out["one_2_thread_trial_samples_per_s"], out["two_1_thread_trials_samples_per_s"]
    assert one > 0 and two > 0 and out["two_trials_speedup"] == pytest.approx(two / one)
    assert len(out["samples"]["one"]) == len(out["samples"]["two"]) == 1


def test_fused_seeds_are_timed_against_the_same_seeds_one_after_another(fake_mnist_dir, monkeypatch):
    """Both ways train every seed's epoch on the same images; the figure is their samples/s ratio."""
    from bench import fusedseeds

    monkeypatch.setattr(fusedseeds, "wait_until_quiet", lambda: 0.0)  # the other test process keeps it busy
    result = fusedseeds.measure("cpu", counts=(1, 3), repeats=1, max_train=128, data_dir=str(fake_mnist_dir))
    for k in ("1", "3"):
        rates = result["samples_per_s"][k]
        assert rates["fused"] > 0 and rates["one_after_another"] > 0
        assert result[f"fused_seeds_speedup_{k}"] == pytest.approx(rates["fused"] / rates["one_after_another"])
    assert result["images"] == 128 and result["device"] == "cpu"
