"""Figures from the best trial's checkpoint: test images with true and predicted
labels (write-up 001), and the first conv layer's feature maps (write-up 003).

They need the trial's checkpoint, the hpo package and the dataset's files; when
any is missing they are skipped with a note, never an error.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis import fmt
from analysis.figures import save
from analysis.load import StudyData
from analysis.tables import Skipped

GRID = (4, 8)  # rows, columns of the prediction grid
MAPS_SAMPLES, MAPS_CHANNELS = 5, 8


def best_trial(data: StudyData):
    t = data.finished
    if t.empty:
        raise Skipped("Figures from a checkpoint need a finished trial.")
    return t.sort_values(data.target, ascending=data.mode == "min").iloc[0]


def checkpoint_dir(data: StudyData, trial) -> Path | None:
    """The trial's latest checkpoint, as trials.csv names it (relative to the study folder)."""
    relative = trial.get("checkpoint")
    if not isinstance(relative, str) or not relative:
        return None  # a report written before trials.csv had the column, or a trial without an epoch
    return data.dir / relative


def load_best(data: StudyData, trust: bool = False):
    """(model, config, test images as the model sees them, the same images for display, labels, class names).
    `trust`: a study-file model class may be unpickled from the folder (hpo.checkpoints.load_model)."""
    best = best_trial(data)
    trial_id = str(best["trial_id"])
    folder = checkpoint_dir(data, best)
    if folder is None:
        raise Skipped(f"No folder for the best trial {trial_id} in trials.csv (its `checkpoint` column): "
                      "no figures from its checkpoint.")
    if not folder.is_dir():
        raise Skipped(f"No checkpoint for the best trial {trial_id} at {folder}: no figures from it.")
    try:
        import torch

        from hpo.data import load_data, pixel_permutation
        from hpo.checkpoints import load_model

        seed = best.get("seed")
        model, config = load_model(folder, trust, None if pd.isna(seed) else int(seed))
        data_ = load_data(config["dataset"], data_dir=config.get("data_dir"), max_eval=64)
        info, test = data_.info, data_.test  # every dataset form (hpo.data.dataset_info): its classes, mean, std
        permutation = pixel_permutation(info.size * info.size) if config.get("permute_pixels") else None
        shown, labels = next(iter(test.batches(64)))
        model_input, _ = next(iter(test.batches(64, resize=config.get("resize"), permutation=permutation)))
        with torch.no_grad():
            predicted = model(model_input).argmax(1)
    except Exception as e:  # no checkpoint or data, hpo missing or changed: the report says why and goes on
        raise Skipped(f"No figures from the best trial's checkpoint ({trial_id}, {folder.name}):"
                      f" {type(e).__name__}: {e}") from None
    return model, info, model_input, shown, labels, predicted


def images(x, info) -> np.ndarray:
    """Normalised [N,C,H,W] tensors back to displayable [N,H,W(,C)] arrays in [0, 1]."""
    mean = np.asarray(info.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(info.std, dtype=np.float32).reshape(1, -1, 1, 1)
    x = np.clip(x.detach().cpu().numpy() * std + mean, 0, 1)
    return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def show(ax, image) -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def predictions(data: StudyData, loaded, out: Path) -> Path:
    """Test images with their true and predicted labels, from the best trial's checkpoint."""
    _, info, _, shown, labels, predicted = loaded
    rows, cols = GRID
    n = min(rows * cols, len(labels))
    pictures = images(shown[:n], info)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 2.0 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
            continue
        show(ax, pictures[i])
        true, pred = info.classes[int(labels[i])], info.classes[int(predicted[i])]
        right = true == pred
        ax.set_title(f"true: {true}\npred: {pred}", fontsize=8, color="black" if right else "#c0392b",
                     fontweight="normal" if right else "bold")
    correct = int((predicted[:n] == labels[:n]).sum())
    best = best_trial(data)
    config = ", ".join(f"{k}={fmt.value(best[f'config/{k}'])}" for k in data.varied_keys)
    fig.suptitle(f"{data.name}: best trial {best['trial_id']} ({config + ', ' if config else ''}seed"
                 f" {fmt.value(best['seed'])}) on {n} test images: {correct}/{n} right (mistakes in red)", fontsize=11)
    fig.tight_layout()
    return save(fig, out / "predictions.png")


def feature_maps(data: StudyData, loaded, out: Path) -> Path:
    """The first convolution layer's feature maps of a few test images, from the best trial's checkpoint."""
    import torch

    model, info, model_input, _, labels, _ = loaded
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if conv is None:
        raise Skipped("Feature maps: the best trial's model has no convolution layer.")
    captured = []
    hook = conv.register_forward_hook(lambda _m, _i, output: captured.append(output.detach()))
    try:
        with torch.no_grad():
            model(model_input[:MAPS_SAMPLES])
    finally:
        hook.remove()
    maps = captured[0].cpu().numpy()
    channels = min(MAPS_CHANNELS, maps.shape[1])
    samples = len(maps)
    pictures = images(model_input[:samples], info)
    fig, axes = plt.subplots(samples, channels + 1, figsize=(1.35 * (channels + 1), 1.45 * samples), squeeze=False)
    for s in range(samples):
        show(axes[s, 0], pictures[s])
        axes[s, 0].set_ylabel(f"true: {info.classes[int(labels[s])]}", fontsize=8)
        for c in range(channels):
            axes[s, c + 1].imshow(maps[s, c], cmap="viridis")
            axes[s, c + 1].set_xticks([])
            axes[s, c + 1].set_yticks([])
            if s == 0:
                axes[s, c + 1].set_title(f"channel {c}", fontsize=8)
    axes[0, 0].set_title("input", fontsize=8)
    fig.suptitle(f"{data.name}: first conv layer ({conv.in_channels}->{conv.out_channels}, "
                 f"{conv.kernel_size[0]}x{conv.kernel_size[1]}), {channels} of {maps.shape[1]} channels",
                 fontsize=10)
    fig.tight_layout()
    return save(fig, out / "feature_maps.png")

