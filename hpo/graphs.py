"""A training step on full batches captured once as a CUDA graph and replayed: a small model's eager step is
bound by the host launching its kernels (2.0 ms per step at batch 64 on an H100, the GPU busy 0.5 ms of it);
a replay is one launch. One mechanism for a lone trial (hpo.trainable.GraphedStep) and a fused seed group
(hpo.fused)."""

from __future__ import annotations

import torch


class ReplayedStep:
    """Subclasses give `step(index)`: the whole step on the batch `index` names (forward, backward, optimizer
    step, the epoch's sums on the device), gradients starting from None or zero. `run_epoch(order, batch_size)`
    fills `index` in place for each full batch (device to device: no host sync): the first WARMUP_STEPS run
    eagerly on a side stream, the next is captured and replayed from then on; the partial last batch runs
    eagerly, so no sample is dropped. A capture that fails, or an `eager` reason given (no CUDA), runs every
    step eagerly; `mode` says which."""

    WARMUP_STEPS = 3  # eager steps on a side stream before capture (PyTorch's CUDA graph docs)

    def __init__(self, optimizer, index: torch.Tensor, eager: str | None = None):
        """`optimizer`: capturable, its learning rate a device tensor (on CUDA); `index`: the static batch."""
        self.optimizer, self.index = optimizer, index
        self.graph, self.steps, self.failure = None, 0, eager

    def step(self, index: torch.Tensor) -> None:
        raise NotImplementedError

    @property
    def mode(self) -> str:
        """trials.csv's `step`: "cuda_graph", or "eager (why)"."""
        return "cuda_graph" if self.failure is None else f"eager ({self.failure})"

    def fall_back(self, reason: str) -> None:
        """From now on the steps run eagerly (`step` without the graph)."""
        print(f"cuda_graphs: this trial trains eagerly: {reason}", flush=True)
        self.failure, self.graph = reason, None
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def full_batch(self) -> None:
        optimizer = self.optimizer
        if self.failure is not None:
            optimizer.zero_grad(set_to_none=True)
            self.step(self.index)
        elif self.graph is not None:
            self.graph.replay()
        elif self.steps < self.WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                optimizer.zero_grad(set_to_none=True)
                self.step(self.index)
            torch.cuda.current_stream().wait_stream(side)
        else:
            # Gradients allocated inside the capture live in the graph's memory pool; each replay
            # overwrites them, so the graph needs no zero_grad of its own.
            optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    self.step(self.index)
            except Exception as e:  # an operation that cannot be captured: eagerly from now on
                self.fall_back(f"capture failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
                optimizer.zero_grad(set_to_none=True)
                self.step(self.index)
                return
            self.graph = graph
            graph.replay()  # capturing records the step; the replay runs it for this batch
        self.steps += 1

    def run_epoch(self, order: torch.Tensor, batch_size: int) -> None:
        """Every batch of `order` (sample indices along its last dimension) through `step`."""
        n = order.shape[-1]
        full = n // batch_size
        for i in range(full):
            self.index.copy_(order[..., i * batch_size:(i + 1) * batch_size])
            self.full_batch()
        if full * batch_size < n:
            # The partial last batch, eagerly: into the same gradient tensors (zeroed, not freed).
            self.optimizer.zero_grad(set_to_none=self.graph is None)
            self.step(order[..., full * batch_size:])
