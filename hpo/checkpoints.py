"""A trial's checkpoints: what the trainable writes every epoch, and what resumes and the analysis read.

A checkpoint is Ray Tune's folder `<experiment>/<trial dir>/checkpoint_NNNNNN/` holding one
`state.pt` (hpo.trainable.Trial.state: model, optimizer, scheduler, random states, config, settings).
trials.csv names each trial's latest one (`checkpoint`, relative to the study folder).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from hpo.errors import HpoError

STATE_FILE = "state.pt"


def save_state(state: dict, folder) -> None:
    import torch
    torch.save(state, Path(folder) / STATE_FILE)


def load_state(checkpoint_dir) -> dict:
    """The state in a checkpoint folder; an HpoError naming the file when it cannot be read."""
    import torch
    path = Path(checkpoint_dir) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # cut short (a full disk, a kill mid-write), missing, or not a torch file
        raise HpoError(f"Checkpoint {path} cannot be read ({type(e).__name__}: {' '.join(str(e).split())}).") \
            from None


def load_newest_readable(checkpoint_dir) -> dict:
    """The state of `checkpoint_dir`, or else of the newest readable checkpoint beside it (Ray keeps
    two: hpo.run), with a warning naming the damaged file. Raises when none can be read."""
    try:
        return load_state(checkpoint_dir)
    except HpoError as damaged:
        if not re.fullmatch(r"checkpoint_\d{6}", Path(checkpoint_dir).name):
            raise  # a downloaded copy (s3://...) in a temporary folder: its neighbours are not this trial's
        for older in sorted(Path(checkpoint_dir).parent.glob("checkpoint_[0-9]*"), reverse=True):
            if older.resolve() == Path(checkpoint_dir).resolve():
                continue
            try:
                state = load_state(older)
            except HpoError:
                continue
            print(f"warning: {damaged} Continuing from the older {older / STATE_FILE} (epoch {state['epoch']}).",
                  file=sys.stderr, flush=True)
            return state
        raise


def latest(trial_dir) -> Path | None:
    """A trial folder's newest checkpoint folder."""
    found = sorted(p.parent for p in Path(trial_dir).glob(f"checkpoint_*/{STATE_FILE}"))
    return found[-1] if found else None


def load_model(checkpoint_dir):
    """The model of a checkpoint (eval mode, CPU) and its full config (with dataset, model, data_dir)."""
    from hpo.data import dataset_info
    from hpo.models import build_model
    from hpo.trainable import RunSettings, trial_options

    state = load_state(checkpoint_dir)
    settings = RunSettings(**state["settings"])
    keys, model_options = trial_options(state["config"])
    info = dataset_info(settings.dataset, settings.data_dir, read=False)  # shape and classes
    model_name = keys["model"] or settings.model
    model = build_model(model_name, in_channels=info.channels, num_classes=info.num_classes,
                        image_size=keys["resize"] or info.size, **model_options)
    model.load_state_dict(state["model"])
    config = {**keys, **model_options, "dataset": settings.dataset, "model": model_name,
              "data_dir": settings.data_dir}
    return model.eval(), config
