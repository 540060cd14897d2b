"""Data path: epochs/s of the trainable's training loop (hpo.trainable.Trial.train_one_epoch: device-resident
normalised split, randperm slices, sums kept on the device) against the seeds' loop, on the same model
(LeNet-5), optimizer (SGD, lr 0.01, momentum 0.9), training images and batch size.

The baseline is what the write-ups run (write-up 001, docs/write-ups.md): torchvision's FashionMNIST
reading -- a Dataset
whose __getitem__ turns one uint8 image into a PIL image (`Image.fromarray(img.numpy(), mode="L")`) and applies
transforms.Compose([ToTensor(), Normalize(mean, std)]) -- through a DataLoader(shuffle=True) with num_workers=0
on a CPU, and write-up 001's CUDA settings (num_workers=1, pin_memory=True) on a GPU; each batch is moved with
.to(device) and the loop keeps `loss.item()` of every batch. The images are exactly the trial's own training
split (recovered to uint8 from it), so both sides see the same samples.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from bench.common import fashion_data_dir, median

CONFIG = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9}


class SeedsDataset(torch.utils.data.Dataset):
    """torchvision.datasets.FashionMNIST's __getitem__, over given uint8 images [N,28,28] and labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.data, self.targets, self.transform = images, labels, transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        from PIL import Image

        img, target = self.data[index], int(self.targets[index])
        img = Image.fromarray(img.numpy(), mode="L")
        return self.transform(img), target


def _uint8_images(trial) -> tuple[torch.Tensor, torch.Tensor]:
    """The trial's normalised training images back as uint8 [N,28,28] on the CPU (exact: round trip)."""
    from hpo.data import normalization

    mean, std = normalization(trial.data.info, trial.keys.get("normalize", "dataset"))
    x = trial.data.train.images.float().cpu() * std[0] + mean[0]
    return (x * 255).round_().clamp_(0, 255).to(torch.uint8)[:, 0], trial.data.train.labels.cpu()


class SeedsLoop:
    """The write-ups' training loop over a DataLoader, with the trial's model architecture and optimizer."""

    def __init__(self, trial, batch_size: int):
        from torchvision import transforms

        from hpo.data import normalization
        from hpo.models import build_model
        from hpo.trainable import make_optimizer

        self.device = trial.device
        mean, std = normalization(trial.data.info, trial.keys.get("normalize", "dataset"))
        images, labels = _uint8_images(trial)
        dataset = SeedsDataset(images, labels, transforms.Compose([transforms.ToTensor(),
                                                                   transforms.Normalize(mean, std)]))
        cuda = self.device.type == "cuda"
        kwargs = {"num_workers": 1, "pin_memory": True} if cuda else {"num_workers": 0}
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, **kwargs)
        info = trial.data.info
        torch.manual_seed(0)
        self.model = build_model("lenet5", in_channels=info.channels, num_classes=info.num_classes,
                                 image_size=info.size).to(self.device)
        k = trial.keys
        self.optimizer = make_optimizer(k["optimizer"], self.model.parameters(), k["lr"], k["momentum"],
                                        k["weight_decay"])

    def train_one_epoch(self) -> dict:
        self.model.train()
        losses, seen, start = [], 0, time.perf_counter()
        for data, target in self.loader:
            data, target = data.to(self.device), target.to(self.device)
            self.optimizer.zero_grad()
            output = self.model(data)
            loss = F.cross_entropy(output, target)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
            seen += len(target)
        return {"train_loss": sum(losses) / len(losses), "samples_per_s": seen / (time.perf_counter() - start)}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def epoch_seconds(runner, device) -> float:
    _sync(device)
    start = time.perf_counter()
    runner.train_one_epoch()
    _sync(device)
    return time.perf_counter() - start


def measure(device: str = "cpu", batch_sizes=(64, 256), repeats: int = 3, max_train: int | None = None,
            data_dir: str | None = None, extra: dict | None = None) -> dict:
    """Interleaved epochs (one warm-up epoch each, then `repeats` pairs); medians. `extra` config keys
    (e.g. amp) apply to the trainable's side only."""
    from hpo.trainable import RunSettings, Trial

    data_dir = data_dir or fashion_data_dir()
    settings = RunSettings("fashion_mnist", "lenet5", 1, data_dir, max_train, 1000)
    out = {"device": device, "repeats": repeats, "config": {**CONFIG, **(extra or {})}, "batch": {}}
    for bs in batch_sizes:
        trial = Trial({**CONFIG, **(extra or {}), "batch_size": bs}, settings, device=device)
        seeds = SeedsLoop(trial, bs)
        ours, theirs = [], []
        for i in range(repeats + 1):
            a, b = epoch_seconds(trial, trial.device), epoch_seconds(seeds, trial.device)
            if i:  # the first pair warms up (allocator, cuDNN, page cache)
                ours.append(a)
                theirs.append(b)
        n = len(trial.data.train)
        out["batch"][str(bs)] = {"images": n, "trainable_epoch_s": median(ours), "seeds_epoch_s": median(theirs),
                                 "trainable_samples_per_s": n / median(ours), "seeds_samples_per_s": n / median(theirs),
                                 "speedup": median(theirs) / median(ours),
                                 "samples": {"trainable": ours, "seeds": theirs}}
    out["loader_speedup"] = min(b["speedup"] for b in out["batch"].values())
    return out
