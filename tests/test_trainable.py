"""The trainable without Ray: it learns, it reports the contract metrics, a checkpoint
resumes exactly where it stopped, and seeds make a trial reproducible."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hpo import HpoError
from hpo.checkpoints import load_model
from hpo.trainable import RunSettings, train_epochs

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
METRICS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
           "epoch_time_s", "samples_per_s", "lr"}


@pytest.mark.realdata
@pytest.mark.skipif(not FASHION.exists(), reason="needs Debian's dataset-fashion-mnist")
def test_lenet5_learns_real_fashion_mnist():
    settings = RunSettings("fashion_mnist", "lenet5", epochs=2, max_train=6000, max_eval=2000)
    config = {"optimizer": "adam", "lr": 0.002, "batch_size": 64}
    history = [metrics for metrics, _ in train_epochs(config, settings, device="cpu")]
    assert [m["epoch"] for m in history] == [1, 2]
    assert METRICS <= set(history[0])
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert history[1]["test_acc"] > 0.7  # chance is 0.1
    assert history[1]["params"] == 61706


def test_checkpoint_resumes_exactly_and_seeds_reproduce(fake_mnist_dir):
    settings = RunSettings("mnist", "mnist_net", epochs=3, data_dir=str(fake_mnist_dir))
    config = {"lr": 0.05, "momentum": 0.5, "batch_size": 32, "augment": True, "seed": 3}

    def strip(metrics):  # timings differ from run to run; everything learned must not
        return {k: v for k, v in metrics.items() if k not in ("epoch_time_s", "samples_per_s")}

    straight = [strip(m) for m, _ in train_epochs(config, settings, device="cpu")]
    again = [strip(m) for m, _ in train_epochs(config, settings, device="cpu")]
    assert straight == again  # same seed, same hardware: the same trial

    first = train_epochs(config, settings, device="cpu")
    metrics, trial = next(first)
    state = trial.state()
    resumed = [strip(m) for m, _ in train_epochs(config, settings, state=state, device="cpu")]
    assert [m["epoch"] for m in resumed] == [2, 3]
    assert resumed == straight[1:]

    other_seed = [strip(m) for m, _ in train_epochs({**config, "seed": 4}, settings, device="cpu")]
    assert other_seed[0]["train_loss"] != straight[0]["train_loss"]


def test_divergence_ends_the_trial_with_a_flag(fake_mnist_dir):
    settings = RunSettings("mnist", "fc2", epochs=5, data_dir=str(fake_mnist_dir))
    history = [m for m, _ in train_epochs({"lr": 1e6}, settings, device="cpu")]
    assert len(history) < 5 and history[-1]["diverged"] and not math.isfinite(history[-1]["train_loss"])


def test_load_model_from_a_trial_folder_or_its_checkpoint(tmp_path, fake_mnist_dir):
    settings = RunSettings("mnist", "lenet5", epochs=1, data_dir=str(fake_mnist_dir))
    _, trial = next(train_epochs({"dropout": 0.3}, settings, device="cpu"))
    checkpoint = tmp_path / "trial" / "checkpoint_000000"
    checkpoint.mkdir(parents=True)
    torch.save(trial.state(), checkpoint / "state.pt")
    model, config = load_model(tmp_path / "trial")
    assert torch.equal(load_model(checkpoint)[0](torch.ones(1, 1, 28, 28)), model(torch.ones(1, 1, 28, 28)))
    with pytest.raises(HpoError, match="never finished an epoch"):
        load_model(tmp_path)
    assert config["model"] == "lenet5" and config["dropout"] == 0.3 and config["dataset"] == "mnist"
    x = torch.randn(2, 1, 28, 28)
    trial.model.eval().to(memory_format=torch.contiguous_format)  # it trained channels-last: the same kernels
    assert torch.equal(model(x), trial.model(x))


def test_command_line_prints_json_lines(fake_mnist_dir):
    proc = subprocess.run([sys.executable, "-m", "hpo.trainable", "--dataset", "mnist", "--model", "mnist_cnn",
                           "--epochs", "2", "--data-dir", str(fake_mnist_dir), "--set", "lr=0.05"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and METRICS <= set(lines[0])
    bad = subprocess.run([sys.executable, "-m", "hpo.trainable", "--model", "lenet5", "--set", "dropot=0.1",
                          "--data-dir", str(fake_mnist_dir), "--dataset", "mnist"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "dropot" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("optimizer, extra", [("sgd", {"momentum": 0.9}), ("adam", {"weight_decay": 1e-4}),
                                              ("sgd", {"permute_pixels": True, "resize": 32})])
def test_cuda_graph_training_matches_eager(optimizer, extra, tmp_path):
    """Same seed, same batches: the replayed CUDA graph and the eager loop give the same losses over a few
    hundred steps (5 epochs of 39 full batches and a partial one), with the per-epoch lr schedule."""
    from conftest import make_fake_datasets

    data = make_fake_datasets(tmp_path / "data", n_train=3000, n_test=200, datasets=("mnist",))
    settings = RunSettings("mnist", "lenet5", epochs=5, data_dir=str(data))
    config = {"batch_size": 64, "lr": 0.01 if optimizer == "sgd" else 1e-3, "optimizer": optimizer,
              "lr_gamma": 0.7, "seed": 3, **extra}
    runs = {}
    for graphs in (False, True):
        runs[graphs] = [m for m, _ in train_epochs({**config, "cuda_graphs": graphs}, settings, device="cuda")]
    assert {m["step"] for m in runs[True]} == {"cuda_graph"} and {m["step"] for m in runs[False]} == {"eager"}
    for key in ("train_loss", "val_loss", "lr"):
        eager, graph = [m[key] for m in runs[False]], [m[key] for m in runs[True]]
        assert graph == pytest.approx(eager, rel=2e-3), key
    assert runs[True][-1]["train_loss"] < runs[True][0]["train_loss"]  # it learns


def test_cuda_graphs_is_a_no_op_on_the_cpu(fake_mnist_dir):
    settings = RunSettings("mnist", "lenet5", epochs=1, data_dir=str(fake_mnist_dir))
    (metrics, trial), = train_epochs({"cuda_graphs": True, "seed": 1}, settings, device="cpu")
    (eager, _), = train_epochs({"cuda_graphs": False, "seed": 1}, settings, device="cpu")
    assert metrics["step"] == eager["step"] == "eager" and trial.graph_step is None
    assert metrics["train_loss"] == eager["train_loss"]


def test_a_damaged_checkpoint_is_named_and_only_an_older_one_beside_it_is_used(tmp_path, fake_mnist_dir, capsys):
    """Ray keeps a trial's two newest checkpoints; a full disk or a kill can leave one cut short. Going back
    an epoch retrains it; going forward would leave epochs out of epochs.csv."""
    from hpo import HpoError
    from hpo.checkpoints import load_newest_readable, load_state, save_state

    settings = RunSettings("mnist", "mnist_cnn", epochs=2, data_dir=str(fake_mnist_dir))
    for metrics, trial in train_epochs({"lr": 0.05}, settings, device="cpu"):
        folder = tmp_path / "trial" / f"checkpoint_{metrics['epoch'] - 1:06d}"
        folder.mkdir(parents=True)
        save_state(trial.state(), folder)
    oldest, newest = tmp_path / "trial" / "checkpoint_000000", tmp_path / "trial" / "checkpoint_000001"
    intact = (newest / "state.pt").read_bytes()
    (newest / "state.pt").write_bytes(intact[:500])  # cut short
    with pytest.raises(HpoError, match=r"checkpoint_000001/state.pt cannot be read"):
        load_state(newest)
    state, note = load_newest_readable(newest)
    assert state["epoch"] == 1 and "checkpoint_000001/state.pt cannot be read" in capsys.readouterr().err
    assert "Went back to the older" in note and "checkpoint_000000/state.pt (epoch 1)" in note
    assert load_newest_readable(oldest)[1] == ""
    (newest / "state.pt").write_bytes(intact)
    (oldest / "state.pt").write_bytes(b"")  # the newer one is readable, but never jumped to
    with pytest.raises(HpoError, match="checkpoint_000000"):
        load_newest_readable(oldest)
    (newest / "state.pt").write_bytes(b"")  # both damaged: the error stands
    with pytest.raises(HpoError, match="checkpoint_000001"):
        load_newest_readable(newest)

# ---------------------------------------------------------------- memory layout

LAYOUT_CASES = [  # (dataset, model, config, steps): every registry model and a torchvision one, batch norm,
    ("mnist", "fc2", {}, 30),  # dropout, 3-channel data, augmentation, resize and the pixel permutation
    ("mnist", "mnist_cnn", {"permute_pixels": True}, 30),
    ("mnist", "mnist_net", {"augment": True}, 30),  # Dropout2d and Dropout
    ("mnist", "lenet5", {"feature_maps": 16, "dropout": 0.5}, 30),
    ("mnist", "downsample_net", {"resize": 32, "feature_size": 8}, 30),
    ("cifar10", "cifar_cnn", {"augment": True}, 30),
    # Deep, with batch norm at batch 8 on random images: both layouts agree to 1e-6 for 16 steps (VGG) or 2
    # (ResNet-18), then a near-tie grows about 10x a step, exactly as it does between two NCHW runs on 1 and
    # 2 threads (measured): float chaos of these nets, not the layout.
    ("cifar10", "vgg", {"cfg": "A", "feature_maps": 8, "classifier_width": 32, "batch_norm": True}, 15),
    ("cifar10", "torchvision:resnet18", {"resize": 24}, 2),
]


@pytest.mark.parametrize("dataset, model, options, steps", LAYOUT_CASES, ids=[c[1] for c in LAYOUT_CASES])
def test_channels_last_trains_as_nchw_does(dataset, model, options, steps, tmp_path):
    """The same initial weights and batches, an epoch of `steps` steps of batch 8, in both layouts: losses
    within a relative 1e-4 (other kernels round differently); the key off gives NCHW."""
    from conftest import make_fake_datasets

    data_dir = make_fake_datasets(tmp_path, n_train=288, n_test=16, datasets=(dataset,))
    settings = RunSettings(dataset, model, epochs=1, data_dir=str(data_dir), max_train=8 * steps, max_eval=16)
    config = {"lr": 0.005, "batch_size": 8, "seed": 1, **options}
    runs = {}
    for channels_last in (True, False):
        (metrics, trial), = train_epochs({**config, "channels_last": channels_last}, settings, device="cpu")
        runs[channels_last] = metrics, trial
    (fast, fast_trial), (plain, plain_trial) = runs[True], runs[False]
    convolutional = model != "fc2"
    assert fast["layout"] == ("channels_last" if convolutional else "nchw (no 2-D convolutions)")
    assert plain["layout"] == "nchw (channels_last=False)"
    if convolutional:
        assert fast_trial.data.train.images.is_contiguous(memory_format=torch.channels_last)
        conv = next(m for m in fast_trial.model.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert len(fast_trial.data.train) <= 8 * steps
    for metric in ("train_loss", "val_loss", "test_loss"):
        assert fast[metric] == pytest.approx(plain[metric], rel=1e-4), metric
    for a, b in zip(fast_trial.model.parameters(), plain_trial.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=5e-4)  # biases near 0 carry the rounding too


def test_a_model_whose_forward_cannot_take_channels_last_keeps_nchw_with_the_reason(tmp_path, fake_mnist_dir):
    """A .view() of a convolution's channels-last output fails: the trial says so and trains in NCHW."""
    (tmp_path / "viewnet.py").write_text(
        "import torch\n"
        "class ViewNet(torch.nn.Module):\n"
        "    def __init__(self, in_channels, num_classes, image_size):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(in_channels, 4, 3, padding=1)\n"
        "        self.fc = torch.nn.Linear(4 * image_size * image_size, num_classes)\n"
        "    def forward(self, x):\n"
        "        x = self.conv(x)\n"
        "        return self.fc(x.view(x.shape[0], -1))\n")
    sys.path.insert(0, str(tmp_path))
    try:
        settings = RunSettings("mnist", "viewnet:ViewNet", epochs=1, data_dir=str(fake_mnist_dir))
        (metrics, trial), = train_epochs({"lr": 0.05}, settings, device="cpu")
    finally:
        sys.path.remove(str(tmp_path))
    assert metrics["layout"].startswith("nchw (RuntimeError: view size is not compatible"), metrics["layout"]
    assert math.isfinite(metrics["train_loss"])


# ---------------------------------------------------------------- --smoke and the graph's fallbacks

def test_smoke_caps_the_study_and_a_trial_s_compute(tmp_path, fake_mnist_dir):
    """--smoke: at most SMOKE_EPOCHS epochs and SMOKE_TRIALS trials (a grid keeps its first values), one seed,
    and a trial trains only the images max_flops buys (a heavier model fewer), at least one batch."""
    from ray import tune

    from hpo import Study
    from hpo.study import SMOKE_EPOCHS, SMOKE_TRIALS
    from hpo.trainable import forward_flops, smoke_caps
    from hpo.data import load_data

    study = Study(name="s", dataset="mnist", model="lenet5", epochs=30, seeds=3,
                  space={"lr": tune.grid_search([0.1, 0.01, 0.001]), "batch_size": tune.grid_search([16, 32, 64])})
    smoke = study.smoke()
    assert smoke.epochs == SMOKE_EPOCHS and smoke.seeds == 1 and smoke.num_trials() <= SMOKE_TRIALS
    assert smoke.space["lr"]["grid_search"][0] == 0.1 and smoke.space["batch_size"]["grid_search"][0] == 16

    data = load_data("mnist", data_dir=str(fake_mnist_dir))
    keys = {"model": None, "resize": None, "batch_size": 16}
    per_image = forward_flops(keys, {}, "lenet5", data.info)
    capped = smoke_caps(data, keys, {}, "lenet5", max_flops=300 * per_image)  # 75 images' training
    assert len(capped.train) == 75 and len(capped.val) == len(capped.test) == 37
    wide = smoke_caps(data, keys, {"feature_maps": 64}, "lenet5", max_flops=300 * per_image)
    assert len(wide.train) < len(capped.train)  # a heavier model trains fewer images
    assert len(smoke_caps(data, keys, {}, "lenet5", max_flops=1).train) == 16  # at least one batch
    resized = forward_flops({**keys, "resize": 56}, {}, "lenet5", data.info)
    assert resized > 3 * per_image  # the config's resize is the size counted


def test_a_graph_step_says_why_it_cannot_replay_augment_or_amp():
    """The CUDA graph's refusals are decided before any GPU work, so they are checked here on the CPU."""
    from hpo.trainable import GraphedStep

    assert "augment" in GraphedStep.unsupported(augment=True, amp=False)
    assert "amp" in GraphedStep.unsupported(augment=False, amp=True)
    assert GraphedStep.unsupported(augment=False, amp=False) is None


def test_the_graph_step_trains_the_eager_loop_s_batches(fake_mnist_dir):
    """GraphedStep's own batch order, pixel permutation, resize and partial last batch, run on the CPU
    through its eager fallback (a graph needs CUDA): the same losses as the eager loop, bit for bit."""
    from hpo.trainable import Trial

    settings = RunSettings("mnist", "lenet5", epochs=2, data_dir=str(fake_mnist_dir))
    config = {"lr": 0.05, "batch_size": 48, "resize": 32, "permute_pixels": True, "seed": 1}
    learned = ("train_loss", "train_acc", "val_loss", "test_acc")
    eager = [[m[k] for k in learned] for m, _ in train_epochs(config, settings, device="cpu")]

    trial = Trial(config, settings, device="cpu")
    assert len(trial.data.train) % 48 != 0  # a partial last batch is part of the comparison
    trial.graph_step = trial.make_graph_step()
    trial.graph_step.fall_back("no CUDA in this test")
    graphed = [[m[k] for k in learned] for m in (trial.run_epoch(), trial.run_epoch())]
    assert trial.step_mode == "eager (no CUDA in this test)"
    assert graphed == eager


def test_a_finished_trial_is_freed_without_a_garbage_collection(fake_mnist_dir):
    """No reference cycle (e.g. trial <-> graph step) keeps a finished trial's model alive: on a GPU that
    memory would be missing from the next trial of a reused actor until Python's cycle collector ran."""
    import gc
    import weakref

    from hpo.trainable import Trial

    settings = RunSettings("mnist", "lenet5", epochs=1, data_dir=str(fake_mnist_dir))
    gc.disable()
    try:
        trial = Trial({"lr": 0.05}, settings, device="cpu")
        trial.graph_step = trial.make_graph_step()
        trial.graph_step.fall_back("no CUDA in this test")
        trial.run_epoch()
        model = weakref.ref(trial.model)
        del trial
        assert model() is None
    finally:
        gc.enable()


# ---------------------------------------------------------------- seed groups

def test_a_seed_group_trains_each_seed_as_a_lone_trial_would(fake_mnist_dir):
    """Three seeds in one group: per seed, the same losses and accuracies as a trial with that seed alone,
    bit for bit (dropout draws from each seed's own torch random state, augment from its generator); a
    checkpoint of the group resumes every seed exactly; the report's mean is over the seeds."""
    import copy

    from hpo.trainable import group_result, train_group

    settings = RunSettings("mnist", "mnist_net", epochs=3, data_dir=str(fake_mnist_dir))
    config = {"lr": 0.05, "momentum": 0.5, "batch_size": 32, "augment": True, "dropout": 0.5}
    learned = ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc")

    def strip(m):
        return [m[k] for k in learned]

    alone = {s: [strip(m) for m, _ in train_epochs({**config, "seed": s}, settings, device="cpu")]
             for s in (0, 1, 2)}
    grouped = {s: [] for s in (0, 1, 2)}
    for results, group in train_group(config, settings, [0, 1, 2], device="cpu"):
        for s, m in results.items():
            grouped[s].append(strip(m))
        if group.epoch == 1:
            state = copy.deepcopy(group.state())  # as saved: the live state_dict would train on
            mean = group_result(results)
    assert grouped == alone
    assert alone[0] != alone[1]  # the seeds differ: the comparison means something
    assert mean["val_acc"] == pytest.approx(sum(alone[s][0][3] for s in (0, 1, 2)) / 3)
    assert set(mean["seeds"]) == {"0", "1", "2"} and mean["epoch"] == 1

    resumed = {s: [] for s in (0, 1, 2)}
    for results, _ in train_group(config, settings, [0, 1, 2], state=state, device="cpu"):
        for s, m in results.items():
            resumed[s].append(strip(m))
    assert resumed == {s: alone[s][1:] for s in (0, 1, 2)}


def test_a_diverged_seed_leaves_its_group_and_the_others_go_on(fake_mnist_dir, monkeypatch):
    from hpo import trainable

    settings = RunSettings("mnist", "fc2", epochs=3, data_dir=str(fake_mnist_dir))
    original = trainable.Trial.run_epoch

    def run_epoch(self):  # seed 1 diverges in its second epoch
        metrics = original(self)
        if self.keys["seed"] == 1 and self.epoch == 2:
            metrics.update(train_loss=float("nan"), diverged=True)
        return metrics

    monkeypatch.setattr(trainable.Trial, "run_epoch", run_epoch)
    epochs = [{s: m["epoch"] for s, m in results.items()}
              for results, _ in trainable.train_group({"lr": 0.05}, settings, [0, 1, 2], device="cpu")]
    assert epochs == [{0: 1, 1: 1, 2: 1}, {0: 2, 1: 2, 2: 2}, {0: 3, 2: 3}]
    mean = trainable.group_result({1: {**dict.fromkeys(("train_loss",), float("nan")), "diverged": True,
                                       **{m: 0.5 for m in trainable.METRICS if m != "train_loss"},
                                       "epoch": 2, "params": 1, "step": "eager", "layout": "nchw"}})
    assert mean["diverged"] and math.isnan(mean["train_loss"])


# ---------------------------------------------------------------- fused seed groups (hpo.fused)

def bn_net(in_channels, num_classes, image_size):
    """A model with batch norm (its running statistics are buffers, one set per seed when fused)."""
    from torch import nn
    return nn.Sequential(nn.Conv2d(in_channels, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(6 * (image_size // 2) ** 2, num_classes))


def seed_trials(config: dict, settings, seeds=(0, 1, 2), device="cpu"):
    from hpo.trainable import Trial
    return [Trial({**config, "seed": s}, settings, device) for s in seeds]


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))


@pytest.mark.parametrize("config", [
    {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-3},
    # Adam at 0.003 on these images: a rounding difference grew to 2e-3 in a weight within 50 steps (Adam
    # moves a weight by about lr whatever its gradient's size), both ways of training alike; at 0.001, 1e-6.
    {"optimizer": "adam", "lr": 0.001, "weight_decay": 1e-3},
    {"model": bn_net, "optimizer": "sgd", "lr": 0.02, "momentum": 0.9},
], ids=["sgd-momentum", "adam", "batch-norm"])
@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("graphed", [False, True], ids=["eager", "graph-step"])
def test_fused_seeds_train_as_the_seeds_do_one_after_another(config, device, graphed, fake_mnist_dir):
    """50 steps (2 epochs of 25 batches) of three seeds as one vmapped model: every seed's losses, weights,
    batch-norm statistics and optimizer state within float rounding of the same seeds trained alone (on
    CUDA each alone replays its CUDA graph; cuDNN may compute in TF32 there: a looser tolerance). With
    `graphed` the fused step gathers each seed's batches from the split by index, as its CUDA graph does:
    captured and replayed on CUDA, the same step eagerly on a CPU."""
    from hpo import fused

    settings = RunSettings("mnist", "lenet5", epochs=2, data_dir=str(fake_mnist_dir))
    config = {**config, "batch_size": 10}  # 250 training images: 25 batches
    alone, together = seed_trials(config, settings, device=device), seed_trials(config, settings, device=device)
    rel = atol = 1e-4 if device == "cpu" else 1e-2
    for _ in range(2):
        losses = [t.train_one_epoch()["train_loss"] for t in alone]
        trained, _, failure = fused.train_one_epoch(together, graphed=graphed)
        assert failure is None
        fused_losses = [m["train_loss"] for m in trained]
        assert fused_losses == pytest.approx(losses, rel=rel)
    assert len({round(v, 6) for v in losses}) == 3  # the seeds differ: the comparison means something
    for a, b in zip(alone, together):
        for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.allclose(x.float(), y.float(), atol=atol), name
        state_a, state_b = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
        assert state_a.keys() == state_b.keys() and state_a
        for i in state_a:
            for key, value in state_a[i].items():
                assert torch.allclose(value.float(), state_b[i][key].float(), atol=atol), (i, key)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_the_fused_graph_step_trains_as_the_eager_fused_step(device, fake_mnist_dir):
    """The fused step a CUDA graph holds (each seed's batch gathered from the split by its own order, the
    pixel permutation applied to the stacked batch) against the eager fused loop, a partial last batch
    included (250 images in batches of 12): the same losses and weights (on CUDA: captured and replayed)."""
    from hpo import fused

    settings = RunSettings("mnist", "lenet5", epochs=1, data_dir=str(fake_mnist_dir))
    config = {"optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "batch_size": 12, "permute_pixels": True}
    eager, graphed = seed_trials(config, settings, device=device), seed_trials(config, settings, device=device)
    torch.manual_seed(0)
    by_loop, _, _ = fused.train_one_epoch(eager)
    torch.manual_seed(0)
    by_graph, _, failure = fused.train_one_epoch(graphed, graphed=True)
    assert failure is None
    tolerance = 1e-6 if device == "cpu" else 1e-3
    assert [m["train_loss"] for m in by_graph] == pytest.approx([m["train_loss"] for m in by_loop], rel=tolerance)
    assert len({round(m["train_loss"], 6) for m in by_loop}) == 3  # the seeds differ
    for a, b in zip(eager, graphed):
        for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.allclose(x.float(), y.float(), atol=tolerance), name


def test_fused_seeds_draw_their_own_dropout_masks(fake_mnist_dir):
    """Dropout under vmap: each seed its own mask at the layer's rate (the masks are not a lone trial's:
    they come from one random stream for the group)."""
    from torch.func import functional_call, stack_module_state, vmap

    settings = RunSettings("mnist", "lenet5", epochs=1, data_dir=str(fake_mnist_dir))
    trials = seed_trials({"dropout": 0.5}, settings)
    params, buffers = stack_module_state([t.model for t in trials])
    drop = torch.nn.Dropout(0.5)
    x = torch.ones(3, 64, 84)
    masks = vmap(lambda p, b, x: functional_call(drop, ({}, {}), (x,)), randomness="different")(params, buffers, x)
    zeros = (masks == 0).float().mean(dim=(1, 2))
    assert all(0.45 < z < 0.55 for z in zeros.tolist())
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])


def test_a_fused_seed_group_resumes_exactly_and_drops_a_diverged_seed(fake_mnist_dir):
    """fused_seeds=True on a CPU: the group's step says so; a checkpoint after epoch 1 resumes to the same
    numbers as the run that went on; a seed whose weights are NaN diverges, leaves the group after its
    epoch, and the other seeds' numbers stay bit for bit those of the group without the NaN."""
    import copy

    from hpo.trainable import SeedGroup, train_group

    settings = RunSettings("mnist", "mnist_net", epochs=3, data_dir=str(fake_mnist_dir))
    config = {"lr": 0.05, "momentum": 0.5, "batch_size": 32, "fused_seeds": True}
    learned = ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc")
    through = {s: [] for s in (0, 1, 2)}
    for results, group in train_group(config, settings, [0, 1, 2], device="cpu"):
        assert {m["step"] for m in results.values()} == {"fused (torch.func.vmap)"}
        for s, m in results.items():
            through[s].append([m[k] for k in learned])
        if group.epoch == 1:
            state = copy.deepcopy(group.state())
    resumed = {s: [] for s in (0, 1, 2)}
    for results, _ in train_group(config, settings, [0, 1, 2], state=state, device="cpu"):
        for s, m in results.items():
            resumed[s].append([m[k] for k in learned])
    assert resumed == {s: through[s][1:] for s in (0, 1, 2)}

    group = SeedGroup(config, settings, [0, 1, 2], device="cpu")
    with torch.no_grad():
        next(group.members[1].model.parameters()).fill_(float("nan"))
    first = group.run_epoch()
    assert first[1]["diverged"] and set(group.members) == {0, 2}
    assert [first[s][k] for s in (0, 2) for k in learned] == [through[s][0][i] for s in (0, 2)
                                                                for i in range(len(learned))]
    second = group.run_epoch()
    assert set(second) == {0, 2} and all(math.isfinite(m["train_loss"]) for m in second.values())
    assert SeedGroup({**config, "fused_seeds": None}, settings, [0, 1], device="cpu").trains_fused is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_seed_group_on_a_gpu_trains_fused_by_default(fake_mnist_dir):
    from hpo.trainable import train_group

    settings = RunSettings("mnist", "mnist_net", epochs=2, data_dir=str(fake_mnist_dir))
    for results, group in train_group({"lr": 0.05, "momentum": 0.5}, settings, [0, 1, 2], device="cuda"):
        assert group.trains_fused and group.graphed
        assert {m["step"] for m in results.values()} == {"fused (torch.func.vmap) in a cuda graph"}
        assert all(math.isfinite(m["train_loss"]) and 0 <= m["val_acc"] <= 1 for m in results.values())


def test_a_gpu_share_caps_the_trial_s_memory_and_names_the_cap():
    """--gpus-per-trial 0.25: the trial caps its CUDA memory at 25% (torch.cuda.set_per_process_memory_fraction:
    the call itself needs a GPU, which this machine lacks), and its out-of-memory error says so; whole GPUs
    are not capped."""
    from hpo.trainable import gpu_share, out_of_memory_message

    assert gpu_share({"CPU": 1, "GPU": 0.25}) == 0.25
    assert gpu_share({"CPU": 1, "GPU": 1}) is None and gpu_share({"CPU": 1}) is None
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
    assert out_of_memory_message(oom, 0.25) == (
        "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB (this trial may use 25% of its GPU's "
        "memory, its --gpus-per-trial 0.25: a larger share, or a smaller batch or model, fits)")
    assert out_of_memory_message(MemoryError("host"), 0.25) == "out of memory: host"
