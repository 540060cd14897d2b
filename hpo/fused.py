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


def train_one_epoch(trials: list) -> tuple[list[dict], float]:
    """One epoch of every trial (hpo.trainable.Trial, one per seed, the same configuration) as one fused
    model; each trial's train metrics, and the seconds the epoch took. The trials' models, optimizers
    and generators are where they would be after each had trained the epoch alone (up to float
    rounding and the dropout masks)."""
    first, models = trials[0], [t.model for t in trials]
    k = first.keys
    for model in models:
        model.train()
    params, buffers = stack_module_state(models)  # new leaf tensors: [seeds, *shape]
    stacked = list(params.values())
    own = [list(m.parameters()) for m in models]  # each seed's, in the stack's order (named_parameters)
    optimizer = OPTIMIZERS[k["optimizer"]].build(stacked, float(first.optimizer.param_groups[0]["lr"]),
                                                 k["momentum"], k["weight_decay"], first.fused)
    optimizer.state.update(_stack_state([t.optimizer for t in trials], own, stacked))
    base = copy.deepcopy(first.model).to("meta")  # the computation only; the weights come from the stack

    def loss_and_output(p, b, x, y):
        out = functional_call(base, (p, b), (x,))
        return F.cross_entropy(out, y), out

    step = vmap(loss_and_output, randomness="different")  # each seed its own dropout masks
    device = first.device
    total_loss = torch.zeros(len(trials), device=device)
    correct = torch.zeros(len(trials), dtype=torch.long, device=device)
    seen = 0
    start = time.perf_counter()
    for batch in zip(*(t.batches(t.data.train, train=True) for t in trials)):
        x = torch.stack([x for x, _ in batch])
        y = torch.stack([y for _, y in batch])
        losses, out = step(params, buffers, x, y)
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
            for loss, c in zip(losses, correct)], seconds
