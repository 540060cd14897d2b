"""A trial's checkpoints: what the trainable writes every epoch, and what resumes and the analysis read.

A checkpoint is Ray Tune's folder `<experiment>/<trial dir>/checkpoint_NNNNNN/` holding one
`state.pt` (hpo.trainable.Trial.state: model, optimizer, scheduler, random states, config, settings).
trials.csv names each trial's latest one (`checkpoint`, relative to the study folder).

A results folder is data, not code: `state.pt` holds only tensors, numbers and strings and loads with
torch's `weights_only=True`, so a copied folder cannot run code when it is resumed or analysed. A model
class defined in the study file (hpo.models.ModelRef, pickled by value) is the one exception: it is kept
apart in `study_code.pt`, and only `load_model(..., trust=True)` (`python -m analysis --trust`) unpickles it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from hpo.errors import HpoError

STATE_FILE = "state.pt"
CODE_FILE = "study_code.pt"  # the study file's model classes of a state, pickled by value (ModelRef)
CODE_SECTIONS = ("config", "settings")  # the parts of a state that may name a study-file model


class UntrustedCode(HpoError):
    """Loading this checkpoint's model would unpickle code from the results folder."""


def save_state(state: dict, folder) -> None:
    """Write `state` into a checkpoint folder: every study-file model (a ModelRef) is its label
    ("studies/x.py:MyNet") in state.pt, and the one the trial trained (the config's model, else the
    study's) is pickled into CODE_FILE, so a folder needs trusting only for a model it holds."""
    import torch

    from hpo.models import ModelRef
    section = "config" if state["config"].get("model") else "settings"
    trained = state[section]["model"]
    plain = {**state, **{s: {k: str(v) if isinstance(v, ModelRef) else v for k, v in state[s].items()}
                         for s in CODE_SECTIONS}}
    torch.save(plain, Path(folder) / STATE_FILE)
    if isinstance(trained, ModelRef):
        torch.save({section: {"model": trained}}, Path(folder) / CODE_FILE)


def load_state(checkpoint_dir) -> dict:
    """The state in a checkpoint folder (weights_only: tensors, numbers, strings; a study-file model is
    its label); an HpoError naming the file when it cannot be read."""
    import torch
    path = Path(checkpoint_dir) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # cut short (a full disk, a kill mid-write), missing, not a torch file, or code
        reason = " ".join(str(e).split())
        if "weights_only" in reason:  # torch's own message is a page long: the point is that it holds code
            reason = "it holds pickled objects other than tensors, numbers and strings, which are not loaded"
        raise HpoError(f"Checkpoint {path} cannot be read ({type(e).__name__}: {reason}).") from None


def load_study_code(checkpoint_dir, state: dict, trust: bool) -> dict:
    """`state` with its study-file models put back from CODE_FILE: unpickling runs code from the folder,
    so only with `trust`; else an UntrustedCode error saying how to say so."""
    path = Path(checkpoint_dir) / CODE_FILE
    if not path.exists():
        return state
    if not trust:
        raise UntrustedCode(f"{path} holds a model class pickled from the study file; loading it would run "
                            "code from the results folder. If you trust where the folder came from, pass "
                            "--trust (python -m analysis --trust FOLDER).")
    import torch
    code = torch.load(path, map_location="cpu", weights_only=False)
    return {**state, **{section: {**state[section], **code.get(section, {})} for section in CODE_SECTIONS}}


def load_newest_readable(checkpoint_dir) -> tuple[dict, str]:
    """The state of `checkpoint_dir` and "", or else the state of the newest readable *older* checkpoint
    beside it (Ray keeps two: hpo.run) and a note naming the damaged file and the epoch it went back to
    (the trial reports it: trials.csv's `note`). Never a newer one: the epochs between would be missing
    from epochs.csv. Raises when none can be read."""
    try:
        return load_state(checkpoint_dir), ""
    except HpoError as damaged:
        this = Path(checkpoint_dir)
        if not re.fullmatch(r"checkpoint_\d{6}", this.name):
            raise  # a downloaded copy (s3://...) in a temporary folder: its neighbours are not this trial's
        for older in sorted(this.parent.glob("checkpoint_[0-9]*"), reverse=True):
            if not re.fullmatch(r"checkpoint_\d{6}", older.name) or older.name >= this.name:
                continue
            try:
                state = load_state(older)
            except HpoError:
                continue
            note = f"{damaged} Went back to the older {older / STATE_FILE} (epoch {state['epoch']})."
            print(f"warning: {note}", file=sys.stderr, flush=True)
            return state, note
        raise


def latest(trial_dir) -> Path | None:
    """A trial folder's newest checkpoint folder."""
    found = sorted(p.parent for p in Path(trial_dir).glob(f"checkpoint_*/{STATE_FILE}"))
    return found[-1] if found else None


def load_model(folder, trust: bool = False, seed: int | None = None):
    """The model of a checkpoint folder, or of a trial folder's newest checkpoint (eval mode, CPU), and its
    full config (with dataset, model, data_dir); of a seed group's checkpoint, the model of `seed` (default:
    its first). A study-file model class is unpickled only with `trust` (else UntrustedCode)."""
    from hpo.data import dataset_info
    from hpo.models import trial_model
    from hpo.study import RunSettings, trial_options

    folder = Path(folder)
    if not (folder / STATE_FILE).exists():  # a trial folder
        newest = latest(folder)
        if newest is None:
            raise HpoError(f"No checkpoint in {folder}: the trial never finished an epoch.")
        folder = newest
    state = load_study_code(folder, load_state(folder), trust)
    if "members" in state:  # a seed group (hpo.trainable.SeedGroup): one model per seed
        if seed is None:
            seed = min(state["members"])
        if seed not in state["members"]:
            raise HpoError(f"{folder / STATE_FILE} holds seeds {sorted(state['members'])} of its group, not {seed}.")
        state = {**state, **state["members"][seed], "config": {**state["config"], "seed": seed}}
    settings = RunSettings(**state["settings"])
    keys, model_options = trial_options(state["config"])
    info = dataset_info(settings.dataset, settings.data_dir, read=False)  # shape and classes
    model, model_name, _ = trial_model(keys, model_options, settings.model, info)
    model.load_state_dict(state["model"])
    config = {**keys, **model_options, "dataset": settings.dataset, "model": model_name,
              "data_dir": settings.data_dir}
    return model.eval(), config
