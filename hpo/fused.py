"""A seed group's seeds trained as one model (the space key `fused_seeds`): their parameters, buffers and
optimizer state stacked along a new first dimension, one forward and backward for all of them through
torch.func.vmap, one optimizer step. Each seed keeps its own batch order (its trial's generator: the same
batches as it would train alone) and its own dropout masks (vmap's randomness="different"); batch norm
keeps a running mean and variance per seed. On a GPU a small model's step is bound by launching kernels,
so K seeds in one set of launches cost about as much as one (HFTA, Wang et al., MLSys 2021, fuses models
this way); on a CPU each kernel already has work enough, and fusing was slower (bench/README.md).

The seeds' own models and optimizers stay the record: the stack is built from them at the start of an
epoch and written back at its end, so evaluation, checkpoints, a resume and a seed that diverged and
leaves the group are the same as when the seeds train one after another (hpo.trainable.SeedGroup)."""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from hpo.data import pixel_transforms
from hpo.graphs import ReplayedStep
from hpo.registry import OPTIMIZERS


def unsupported(keys: dict, device: torch.device) -> str | None:
    """Why a configuration's seeds cannot train fused, or None (`keys`: hpo.study.trial_options)."""
    if keys["amp"] and device.type == "cuda":
        return "amp (mixed precision) is not fused"
    return None


# The one entry of torch's optimizer states that is not per element: the step count (Adam, AdamW, RMSprop),
# the same in every seed. Every other entry is shaped like its parameter and is stacked with it.
SHARED = ("step",)


def _stack_state(optimizers, params: list[list[torch.Tensor]], stacked: list[torch.Tensor]) -> dict:
    """The seeds' optimizer states (`params`: each seed's parameters) as one state of the stacked ones."""
    state = {}
    for i, param in enumerate(stacked):
        per_seed = [opt.state.get(p[i]) for opt, p in zip(optimizers, params)]
        if per_seed[0]:
            state[param] = {key: value.clone() if key in SHARED else torch.stack([s[key] for s in per_seed])
                            for key, value in per_seed[0].items()}
    return state


def _unstack_state(state: dict, optimizers, params: list[list[torch.Tensor]], stacked: list[torch.Tensor]):
    """The stacked optimizer state back into each seed's optimizer (the inverse of _stack_state)."""
    for i, param in enumerate(stacked):
        if param not in state:
            continue
        for k, (opt, p) in enumerate(zip(optimizers, params)):
            opt.state[p[i]] = {key: value.clone() if key in SHARED else value[k].clone()
                               for key, value in state[param].items()}


def graph_unsupported(keys: dict) -> str | None:
    """Why a fused seed group on CUDA cannot replay its step as a CUDA graph, or None (as for a lone trial's
    graph step, hpo.trainable.GraphedStep: `cuda_graphs`, no augment; amp is not fused at all)."""
    if not keys["cuda_graphs"]:
        return "cuda_graphs=False"
    if keys["augment"]:
        return "augment draws from each seed's own random generator, which a graph would replay unchanged"
    return None


def train_one_epoch(trials: list, graphed: bool = False) -> tuple[list[dict], float, str | None]:
    """One epoch of every trial (hpo.trainable.Trial, one per seed, the same configuration) as one fused
    model; each trial's train metrics, the seconds the epoch took, and why its graph failed (None: no graph
    asked for, or none failed). The trials' models, optimizers and generators are where they would be after
    each had trained the epoch alone (up to float rounding and the dropout masks).

    `graphed`: the step on full batches (each seed's batch gathered from the device-resident split by its own
    order, pixel transforms, the vmapped forward and backward, the optimizer step, the epoch's sums) is
    captured as one CUDA graph and replayed (hpo.graphs.ReplayedStep); the partial last batch runs eagerly. On a
    CPU the same step runs eagerly every batch (what the tests compare). A capture that fails trains the
    rest of the epoch eagerly and returns the reason."""
    first, models = trials[0], [t.model for t in trials]
    k = first.keys
    for model in models:
        model.train()
    params, buffers = stack_module_state(models)  # new leaf tensors: [seeds, *shape]
    stacked = list(params.values())
    own = [list(m.parameters()) for m in models]  # each seed's, in the stack's order (named_parameters)
    device = first.device
    capture = graphed and device.type == "cuda"
    lr = float(first.optimizer.param_groups[0]["lr"])
    # A replayed graph reads the learning rate from the device, and steps a capturable optimizer.
    optimizer = OPTIMIZERS[k["optimizer"]].build(stacked, torch.tensor(lr, device=device) if capture else lr,
                                                 k["momentum"], k["weight_decay"], first.fused, capture)
    optimizer.state.update(_stack_state([t.optimizer for t in trials], own, stacked))
    base = copy.deepcopy(first.model).to("meta")  # the computation only; the weights come from the stack

    def loss_and_output(p, b, x, y):
        out = functional_call(base, (p, b), (x,))
        return F.cross_entropy(out, y), out

    vmapped = vmap(loss_and_output, randomness="different")  # each seed its own dropout masks
    total_loss = torch.zeros(len(trials), device=device)
    correct = torch.zeros(len(trials), dtype=torch.long, device=device)
    seen = 0
    start = time.perf_counter()
    if graphed:
        seen, failure = _graphed_epoch(trials, vmapped, params, buffers, optimizer, total_loss, correct, capture)
    else:
        failure = None
        for batch in zip(*(t.batches(t.data.train, train=True) for t in trials)):
            x = torch.stack([x for x, _ in batch])
            y = torch.stack([y for _, y in batch])
            losses, out = vmapped(params, buffers, x, y)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # each seed's loss reaches only its own slice of the stack
            optimizer.step()
            total_loss.add_(losses.detach(), alpha=y.shape[1])
            correct.add_((out.argmax(-1) == y).sum(1))
            seen += y.shape[1]
    seconds = time.perf_counter() - start

    with torch.no_grad():  # back into the seeds' own models and optimizers
        for i, model in enumerate(models):
            for name, tensor in model.named_parameters():
                tensor.copy_(params[name][i])
            for name, tensor in model.named_buffers():
                tensor.copy_(buffers[name][i])
    _unstack_state(optimizer.state, [t.optimizer for t in trials], own, stacked)
    losses, correct = total_loss.tolist(), correct.tolist()
    return [{"train_loss": loss / seen, "train_acc": c / seen, "samples_per_s": seen / seconds}
            for loss, c in zip(losses, correct)], seconds, failure


class _FusedStep(ReplayedStep):
    """The fused step on full batches: each seed's batch gathered from the split by its row of `index`."""

    def __init__(self, trials, vmapped, params, buffers, optimizer, total_loss, correct, capture: bool):
        first = trials[0]
        self.split, self.resize = first.data.train, first.keys["resize"]
        self.permutation = first.permutation.to(first.device) if first.permutation is not None else None
        self.vmapped, self.params, self.buffers = vmapped, params, buffers
        self.total_loss, self.correct = total_loss, correct
        index = torch.zeros(len(trials), first.keys["batch_size"], dtype=torch.long, device=first.device)
        super().__init__(optimizer, index, eager=None if capture else "no CUDA")

    def step(self, idx) -> None:  # idx: [seeds, batch]
        x = pixel_transforms(self.split.images[idx].flatten(0, 1), self.permutation, self.resize)
        x, y = x.unflatten(0, idx.shape), self.split.labels[idx]
        losses, out = self.vmapped(self.params, self.buffers, x, y)
        losses.sum().backward()
        self.optimizer.step()
        self.total_loss.add_(losses.detach(), alpha=idx.shape[1])
        self.correct.add_((out.argmax(-1) == y).sum(1))


def _graphed_epoch(trials, vmapped, params, buffers, optimizer, total_loss, correct, capture: bool):
    """The epoch's batches through _FusedStep (a CUDA graph's, replayed where `capture`); returns the samples
    per seed and why a capture failed (or None)."""
    first = trials[0]
    n, device = len(first.data.train), first.device
    # Each seed's order: its own generator, the same call as its eager loop (hpo.data.Split.batches).
    order = torch.stack([torch.randperm(n, generator=t.generator, device=t.generator.device).to(device)
                         for t in trials])
    steps = _FusedStep(trials, vmapped, params, buffers, optimizer, total_loss, correct, capture)
    steps.run_epoch(order, first.keys["batch_size"])
    return n, steps.failure if capture else None
