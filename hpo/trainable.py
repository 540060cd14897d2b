"""The one trainable: builds data, model and optimizer from a trial's config,
trains, and reports the contract metrics once per epoch.

`train_epochs` is plain PyTorch (no Ray), so it can be run, benchmarked and
debugged alone:  python -m hpo.trainable --dataset fashion_mnist --model lenet5 --set lr=0.001
`tune_trainable` wraps it for Ray Tune: it checkpoints every epoch, so ASHA can
pause a trial and a failed trial restarts from its last epoch. A seed group
(`train_group`, `SeedGroup`) trains one configuration's seeds in one trial.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Iterator

from hpo import env  # noqa: F401  first: settings torch reads when it is imported
import torch
import torch.nn.functional as F

from hpo import checkpoints, fused
from hpo.data import Split, load_data, pixel_permutation, pixel_transforms
from hpo.errors import HpoError
from hpo.graphs import ReplayedStep
from hpo.registry import EPOCHS_KEY, GROUP_KEY, OPTIMIZERS
from hpo.study import METRICS, RunSettings, parse_overrides, trial_options


def make_optimizer(name: str, params, lr, momentum: float, weight_decay: float, fused: bool | None = None,
                   capturable: bool = False):
    """An optimizer of hpo.registry.OPTIMIZERS (`fused`, `capturable`: see there)."""
    if name not in OPTIMIZERS:
        raise HpoError(f"Unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}.")
    return OPTIMIZERS[name].build(params, lr, momentum, weight_decay, fused, capturable)


def trial_device(device: str | None) -> torch.device:
    """Where a trial trains: the device asked for, else CUDA where there is one."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


class Trial:
    """Data, model and optimizer of one trial, built from its config."""

    def __init__(self, config: dict, settings: RunSettings, device: str | None = None, data=None,
                 group_step: str | None = None):
        """`data`: the splits another trial of the same data keys read (a seed group shares them);
        `group_step`: a seed group trains this trial's epochs fused with its other seeds (hpo.fused), and
        this is its step mode (trials.csv's `step`): no graph of its own."""
        from hpo.models import trial_model

        self.config, self.settings = dict(config), settings
        self.keys, model_options = trial_options(config)
        self.device = trial_device(device)
        k = self.keys
        torch.manual_seed(k["seed"])
        self.generator = torch.Generator(device=self.device).manual_seed(k["seed"])
        self.data = data if data is not None else load_data(
            settings.dataset, data_dir=settings.data_dir, val_fraction=k["val_fraction"], device=self.device,
            max_train=settings.max_train, max_eval=settings.max_eval, normalize=k["normalize"])
        info = self.data.info  # every dataset form: built-in, torchvision:, folder:, npz: (hpo.data)
        self.permutation = (pixel_permutation(info.size * info.size, device=self.device)
                            if k["permute_pixels"] else None)
        self.model, self.model_name, _ = trial_model(k, model_options, settings.model, info)
        self.model.to(self.device)
        if settings.max_flops:
            self.data = smoke_caps(self.data, k, model_options, settings.model, settings.max_flops)
        self.layout = self.choose_layout(k["channels_last"])
        self.fused = self.device.type == "cuda" or None  # see make_optimizer
        # Mixed precision only pays (and only exists in fp16 form) on a GPU.
        self.amp = bool(k["amp"]) and self.device.type == "cuda"
        graphed = self.device.type == "cuda" and k["cuda_graphs"] and not group_step
        self.eager_mode = group_step or "eager"
        if graphed:
            reason = GraphedStep.unsupported(augment=k["augment"], amp=self.amp)
            if reason:
                graphed, self.eager_mode = False, f"eager ({reason})"
                print(f"cuda_graphs: this trial trains eagerly: {reason}", flush=True)
        # Replayed graphs read the learning rate from the device: a tensor the scheduler updates in place.
        lr = torch.tensor(float(k["lr"]), device=self.device) if graphed else k["lr"]
        self.optimizer = make_optimizer(k["optimizer"], self.model.parameters(), lr, k["momentum"],
                                        k["weight_decay"], fused=self.fused, capturable=graphed)
        self.graph_step = self.make_graph_step() if graphed else None
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=k["lr_gamma"])
        self.epoch = 0

    def choose_layout(self, channels_last: bool) -> str:
        """Put a convolutional model and its images in channels-last memory layout on a CPU: oneDNN's
        convolutions run 1.1-1.5x faster an epoch that way on this project's 2-core machine (bench/README.md,
        "Memory layout"). The images are converted once here, never per batch (a 1-channel image has the same
        bytes in both layouts). On CUDA nothing changes until bench/gpu_check.sh has measured it. A model
        whose forward cannot take the layout (a .view() of a channels-last activation) stays NCHW. Returns
        what the trial uses, with the reason when it is not channels_last (trials.csv's `layout`)."""
        if not channels_last:
            return "nchw (channels_last=False)"
        if self.device.type != "cpu":
            return "nchw (not measured on this device)"
        if not any(isinstance(m, torch.nn.Conv2d) for m in self.model.modules()):
            return "nchw (no 2-D convolutions)"
        self.model.to(memory_format=torch.channels_last)
        train = self.data.train
        sample = Split(train.images[:2].contiguous(memory_format=torch.channels_last), train.labels[:2])
        x, _ = next(sample.batches(2, resize=self.keys["resize"], permutation=self.permutation))
        try:
            with torch.no_grad():  # eval: batch norm's running statistics and dropout's generator untouched
                self.model.eval()(x)
        except Exception as e:
            self.model.to(memory_format=torch.contiguous_format)
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            print(f"channels_last: this trial keeps the NCHW layout: {reason}", flush=True)
            return f"nchw ({reason})"
        finally:
            self.model.train()
        for split in (self.data.train, self.data.val, self.data.test):
            split.images = split.images.contiguous(memory_format=torch.channels_last)
        return "channels_last"

    def make_graph_step(self) -> GraphedStep:
        # The graph step gets its inputs, not the trial: no reference cycle keeps a finished trial's
        # model, data and graph on the GPU until a full garbage collection.
        transform = functools.partial(pixel_transforms, permutation=self.permutation, resize=self.keys["resize"])
        return GraphedStep(self.model, self.optimizer, self.data.train, self.generator, self.keys["batch_size"],
                           transform)

    @property
    def step_mode(self) -> str:
        """How this trial's steps run: trials.csv's `step` ("cuda_graph", or "eager" with the reason)."""
        return self.graph_step.mode if self.graph_step is not None else self.eager_mode

    def batches(self, split, train: bool):
        k = self.keys
        batch_size = k["batch_size"] if train else max(k["batch_size"], 1000 if not k["resize"] else 64)
        return split.batches(batch_size, shuffle=train, generator=self.generator if train else None,
                             augment=train and k["augment"], resize=k["resize"], permutation=self.permutation)

    def train_one_epoch(self) -> dict:
        if self.graph_step is not None:
            return self.graph_step.train_one_epoch()
        self.model.train()
        # Sums stay on the device, added in place: no per-batch sync with the host, few kernels.
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        start = time.perf_counter()
        for x, y in self.batches(self.data.train, train=True):
            with torch.autocast(self.device.type, enabled=self.amp):
                out = self.model(x)
                loss = F.cross_entropy(out, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total_loss.add_(loss.detach(), alpha=len(y))
            correct.add_((out.argmax(1) == y).sum())
            seen += len(y)
        total_loss, correct = float(total_loss), int(correct)
        train_time = time.perf_counter() - start
        return {"train_loss": total_loss / seen, "train_acc": correct / seen,
                "samples_per_s": seen / train_time}

    @torch.no_grad()
    def evaluate(self, split) -> tuple[float, float]:
        if len(split) == 0:
            return math.nan, math.nan
        self.model.eval()
        total_loss = correct = 0
        for x, y in self.batches(split, train=False):
            with torch.autocast(self.device.type, enabled=self.amp):
                out = self.model(x)
            total_loss = total_loss + F.cross_entropy(out.float(), y, reduction="sum")
            correct = correct + (out.argmax(1) == y).sum()
        return float(total_loss) / len(split), int(correct) / len(split)

    def run_epoch(self, trained: tuple[dict, float] | None = None) -> dict:
        """Train one epoch (or take its train metrics and seconds from a fused seed group: hpo.fused),
        step the learning rate, evaluate."""
        start = time.perf_counter() - (trained[1] if trained else 0.0)
        lr = float(self.optimizer.param_groups[0]["lr"])  # a tensor with CUDA graphs
        metrics = dict(trained[0]) if trained else self.train_one_epoch()
        with warnings.catch_warnings():
            if trained:  # the group's fused optimizer stepped, not this one: torch's order warning is wrong
                warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before", UserWarning)
            self.scheduler.step()
        metrics["val_loss"], metrics["val_acc"] = self.evaluate(self.data.val)
        metrics["test_loss"], metrics["test_acc"] = self.evaluate(self.data.test)
        self.epoch += 1
        metrics.update(epoch=self.epoch, lr=lr, epoch_time_s=time.perf_counter() - start, step=self.step_mode,
                       layout=self.layout)
        if not math.isfinite(metrics["train_loss"]):
            metrics["diverged"] = True
        return metrics

    def state(self) -> dict:
        return {"epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(), "config": self.config, "settings": asdict(self.settings)}

    def load_state(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.model.load_state_dict(state["model"])
        # A checkpoint from another device or mode: its groups take this trial's flags before torch loads
        # it (torch moves a state's `step` to the device only for a fused or capturable group).
        saved = {**state["optimizer"], "param_groups": [dict(g) for g in state["optimizer"]["param_groups"]]}
        for group, ours in zip(saved["param_groups"], self.optimizer.param_groups):
            for flag in ("fused", "capturable"):
                if flag in ours:
                    group[flag] = ours[flag]
        self.optimizer.load_state_dict(saved)
        if self.graph_step is not None:  # replays read the learning rate from the device
            for group in self.optimizer.param_groups:
                group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])

    def params(self) -> int:
        from hpo.models import count_params
        return count_params(self.model)


def forward_flops(keys: dict, model_options: dict, study_model, info) -> float:
    """Forward FLOPs of one image for a trial config (hpo.models.trial_model), counted on PyTorch's meta
    device (no memory, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    from hpo.models import trial_model
    with torch.device("meta"):
        model, _, size = trial_model(keys, model_options, study_model, info)
        x = torch.empty(1, info.channels, size, size)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops())


def smoke_caps(data, keys: dict, model_options: dict, study_model, max_flops: float):
    """The trial's splits cut to what `max_flops` per epoch buys: three quarters for training (a
    forward and a backward: 3x the forward), a quarter for validation and test; at least one batch."""
    import dataclasses

    per_image = forward_flops(keys, model_options, study_model, data.info)
    n_train = max(keys["batch_size"], int(0.75 * max_flops / (3 * per_image)))
    n_eval = max(8, int(0.25 * max_flops / (2 * per_image)))

    def cut(split, n):
        return split if len(split) <= n else Split(split.images[:n], split.labels[:n])
    return dataclasses.replace(data, train=cut(data.train, n_train), val=cut(data.val, n_eval),
                               test=cut(data.test, n_eval))


class GraphedStep(ReplayedStep):
    """A trial's whole training step on full batches (batch gather from the device-resident split, pixel
    permutation and resize, forward, loss, backward, optimizer step, the epoch's sums) replayed as a CUDA
    graph (hpo.graphs.ReplayedStep). Same batches in the same order as the eager loop."""

    @staticmethod
    def unsupported(augment: bool, amp: bool) -> str | None:
        """Why a trial with these options cannot replay a graph, or None."""
        if augment:
            return "augment draws from the trial's own random generator, which a graph would replay unchanged"
        if amp:
            return "amp (mixed precision) is not captured"
        return None

    def __init__(self, model, optimizer, split: Split, generator: torch.Generator, batch_size: int,
                 transform: Callable[[torch.Tensor], torch.Tensor]):
        """`split` lives on the device; `transform` is the trial's pixel permutation and resize; the
        optimizer is capturable, its learning rate a device tensor."""
        device = split.images.device
        super().__init__(optimizer, torch.zeros(batch_size, dtype=torch.long, device=device))
        self.model, self.split, self.generator, self.transform = model, split, generator, transform
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)

    def step(self, index) -> None:
        """The work of one step (what the graph holds); gradients start from None or zero."""
        x = self.transform(self.split.images[index])
        y = self.split.labels[index]
        out = self.model(x)
        loss = F.cross_entropy(out, y)
        loss.backward()
        self.optimizer.step()
        self.loss_sum.add_(loss.detach(), alpha=len(y))
        self.correct.add_((out.argmax(1) == y).sum())

    def train_one_epoch(self) -> dict:
        self.model.train()
        n = len(self.split)
        self.loss_sum.zero_()
        self.correct.zero_()
        start = time.perf_counter()
        # The eager loop's order: the same generator, the same call.
        order = torch.randperm(n, generator=self.generator, device=self.generator.device).to(self.index.device)
        self.run_epoch(order, len(self.index))
        loss_sum, correct = float(self.loss_sum), int(self.correct)
        train_time = time.perf_counter() - start
        return {"train_loss": loss_sum / n, "train_acc": correct / n, "samples_per_s": n / train_time}


def train_epochs(config: dict, settings: RunSettings, state: dict | None = None,
                 device: str | None = None) -> Iterator[tuple[dict, Trial]]:
    """Yield (metrics, trial) after every epoch; stops after a diverged epoch."""
    trial = Trial(config, settings, device)
    if state is not None:
        trial.load_state(state)
    params = trial.params()
    while trial.epoch < settings.epochs:
        metrics = trial.run_epoch()
        metrics["params"] = params
        yield metrics, trial
        if metrics.get("diverged"):
            return


def _rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class SeedGroup:
    """One configuration trained with several seeds in one Ray trial (a seed group: hpo.study's
    `seed_groups`). Every epoch each seed's own model, optimizer, data order and torch random state train
    one epoch, exactly as a lone trial with that seed (train_epochs) would: bitwise the same on a CPU. The
    data is read once and shared (nothing in it is random per seed). A seed whose loss diverges is dropped
    after its epoch; the others go on. With `fused_seeds` (default: on a GPU) the seeds' epochs train as
    one vmapped model (hpo.fused): the same up to float rounding, dropout masks drawn per seed."""

    def __init__(self, config: dict, settings: RunSettings, seeds, device: str | None = None):
        self.config, self.settings = dict(config), settings
        self.members: dict[int, Trial] = {}
        self.rng: dict[int, tuple] = {}  # each seed's torch random state (dropout draws from it)
        keys, _ = trial_options(config)
        group_step, self.graphed = fused_step(keys, trial_device(device), len(seeds))
        self.trains_fused = group_step is not None
        data = None
        for seed in seeds:
            trial = Trial({**config, "seed": int(seed)}, settings, device, data=data, group_step=group_step)
            data = trial.data
            self.members[int(seed)] = trial
            self.rng[int(seed)] = _rng_state(trial.device)  # as a lone trial has it once built

    @property
    def epoch(self) -> int:
        return min((t.epoch for t in self.members.values()), default=self.settings.epochs)

    def run_epoch(self) -> dict[int, dict]:
        """Every seed's metrics of one more epoch; the diverged ones leave the group."""
        results = {}
        if self.trains_fused:  # dropout draws from the first seed's random state, for every seed (vmap)
            first = next(iter(self.members))
            trials = list(self.members.values())
            _set_rng_state(self.rng[first], trials[0].device)
            trained, seconds, failure = fused.train_one_epoch(trials, graphed=self.graphed)
            if failure:  # the later epochs eagerly, as a lone trial's graph step does
                self.graphed = False
                for trial in trials:
                    trial.eager_mode = f"{FUSED}, eager ({failure})"
            self.rng[first] = _rng_state(trials[0].device)
            for (seed, trial), metrics in zip(self.members.items(), trained):
                results[seed] = trial.run_epoch((metrics, seconds))
        else:
            for seed, trial in self.members.items():
                _set_rng_state(self.rng[seed], trial.device)
                results[seed] = trial.run_epoch()
                self.rng[seed] = _rng_state(trial.device)
        for seed, metrics in results.items():
            if metrics.get("diverged"):
                del self.members[seed], self.rng[seed]
        return results

    def state(self) -> dict:
        members = {}
        for seed, trial in self.members.items():
            state = {k: v for k, v in trial.state().items() if k not in ("config", "settings")}
            members[seed] = {**state, "torch_rng": self.rng[seed][0]}
        return {"epoch": self.epoch, "config": self.config, "settings": asdict(self.settings), "members": members}

    def load_state(self, state: dict) -> None:
        for seed in list(self.members):
            if seed in state["members"]:
                self.members[seed].load_state(state["members"][seed])
                self.rng[seed] = _rng_state(self.members[seed].device)
            else:  # dropped (diverged) before the checkpoint
                del self.members[seed], self.rng[seed]

    def params(self) -> int:
        return next(iter(self.members.values())).params()


FUSED = "fused (torch.func.vmap)"


def fused_step(keys: dict, device: torch.device, seeds: int) -> tuple[str | None, bool]:
    """The step mode of a seed group whose seeds train fused (hpo.fused), or None: the space key
    `fused_seeds`, by default on a GPU only (on a CPU fusing was slower: bench/README.md); and whether its
    fused step replays a CUDA graph (on CUDA with `cuda_graphs`, as a lone trial's step would)."""
    wanted = keys["fused_seeds"] if keys["fused_seeds"] is not None else device.type == "cuda"
    if not wanted or seeds < 2:
        return None, False
    reason = fused.unsupported(keys, device)
    if reason:
        print(f"fused_seeds: this group trains its seeds one after another: {reason}", flush=True)
        return None, False
    if device.type != "cuda":
        return FUSED, False
    why_not = fused.graph_unsupported(keys)
    if why_not:
        print(f"cuda_graphs: this group's fused step runs eagerly: {why_not}", flush=True)
        return f"{FUSED}, eager ({why_not})", False
    return f"{FUSED} in a cuda graph", True


def train_group(config: dict, settings: RunSettings, seeds, state: dict | None = None,
                device: str | None = None) -> Iterator[tuple[dict[int, dict], SeedGroup]]:
    """Yield ({seed: metrics}, group) after every epoch of a seed group, until its last epoch or until
    every seed has diverged."""
    group = SeedGroup(config, settings, seeds, device)
    if state is not None:
        group.load_state(state)
    params = group.params()
    while group.members and group.epoch < settings.epochs:
        results = group.run_epoch()
        for metrics in results.values():
            metrics["params"] = params
        yield results, group


def group_result(results: dict[int, dict]) -> dict:
    """What a seed group reports to Ray Tune: every metric's mean over the seeds that trained this epoch
    (ASHA and the searcher judge a configuration by it), and each seed's own metrics under "seeds" (the
    report's rows: hpo.report)."""
    import numpy as np

    first = next(iter(results.values()))
    mean = {m: float(np.nanmean([r[m] for r in results.values()])) if any(math.isfinite(r[m])
            for r in results.values()) else math.nan for m in METRICS}
    return {**mean, "epoch": first["epoch"], "params": first["params"], "step": first["step"],
            "layout": first["layout"], "seeds": {str(s): r for s, r in results.items()},
            **({"diverged": True} if all(r.get("diverged") for r in results.values()) else {})}


def out_of_memory(error: BaseException) -> bool:
    # PyTorch's CPU allocator raises a plain RuntimeError; CUDA raises OutOfMemoryError.
    return (isinstance(error, (torch.OutOfMemoryError, MemoryError))
            or (isinstance(error, RuntimeError) and "can't allocate memory" in str(error)))


def tune_trainable(config: dict, settings: RunSettings) -> None:
    """The Ray Tune function trainable (see hpo.run.build_tuner)."""
    from ray import tune

    share = gpu_share(tune.get_context().get_trial_resources().required_resources)
    if share is not None and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(share)  # before this trial allocates anything
    checkpoint = tune.get_checkpoint()
    state, note = None, ""
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state, note = checkpoints.load_newest_readable(d)
    seeds = config.get(GROUP_KEY)
    if config.get(EPOCHS_KEY):  # an --extend round's new seeds of an earlier configuration: its epochs, no more
        settings = replace(settings, epochs=min(settings.epochs, config[EPOCHS_KEY]))
    try:
        runs = train_group(config, settings, seeds, state) if seeds else train_epochs(config, settings, state)
        for metrics, trial in runs:
            if seeds:
                metrics = group_result(metrics)
            metrics["node"] = _node_id()
            if note:  # the damaged-checkpoint fallback: trials.csv's `note` (workers' stderr goes nowhere)
                metrics["note"], note = note, ""
            with tempfile.TemporaryDirectory() as d:
                checkpoints.save_state(trial.state(), d)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
    except Exception as e:
        # A configuration that cannot fit, or an error this trial already met at the same epoch,
        # would fail the same way on every retry: record it as this trial's result instead of letting
        # max_failures rerun it.
        epoch = state["epoch"] if state else 0
        error = " ".join(f"{type(e).__name__}: {e}".split())
        if out_of_memory(e):
            error = out_of_memory_message(e, share)
        elif not _seen_before(error, epoch):
            raise
        else:
            error = f"the same error on a retry, at epoch {epoch + 1}: {error}"
        tune.report({**dict.fromkeys(METRICS, math.nan), "params": math.nan, "epoch": epoch, "error": error,
                     "node": _node_id()})


def gpu_share(resources: dict) -> float | None:
    """The fraction of one GPU a trial was given (--gpus-per-trial below 1), or None (no GPU, or whole ones).
    The trial caps its CUDA memory at it, so that one large configuration cannot push the trials that
    share its GPU into running out of memory."""
    gpus = float(resources.get("GPU", 0) or 0)
    return gpus if 0 < gpus < 1 else None


def out_of_memory_message(error: BaseException, share: float | None) -> str:
    """trials.csv's error for an out-of-memory trial: the first line of the error, and the cap it hit."""
    message = f"out of memory: {error}".splitlines()[0]
    if share is not None and isinstance(error, torch.OutOfMemoryError):
        message += (f" (this trial may use {share:.0%} of its GPU's memory, its --gpus-per-trial {share:g}: "
                    "a larger share, or a smaller batch or model, fits)")
    return message


def _seen_before(error: str, epoch: int) -> bool:
    """Whether this trial failed with this error after this epoch before (its retries share its folder
    on a node); remembers it otherwise."""
    from ray import tune

    record = Path(tune.get_context().get_trial_dir()) / "last_error.json"
    this = {"error": error, "epoch": epoch}
    try:
        if json.loads(record.read_text()) == this:
            return True
    except (OSError, ValueError):
        pass
    try:
        record.write_text(json.dumps(this))
    except OSError:
        pass
    return False


def _node_id() -> str:
    import ray
    return ray.get_runtime_context().get_node_id()[:12]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpo.trainable",
                                description="Train one configuration without Ray; print one JSON line per epoch.")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--model", default="lenet5")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--data-dir")
    p.add_argument("--max-train", type=int)
    p.add_argument("--max-eval", type=int)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config key, e.g. lr=0.001")
    args = p.parse_args(argv)
    try:
        config = parse_overrides(args.set)
        settings = RunSettings(args.dataset, args.model, args.epochs, args.data_dir, args.max_train, args.max_eval)
        for metrics, _ in train_epochs(config, settings, device=args.device):
            print(json.dumps(metrics), flush=True)
    except HpoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
