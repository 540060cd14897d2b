"""The study folder's life: one run at a time (the lock), nothing overwritten or mixed (--overwrite, the
checks of --resume), and a moved or copied study that resumes where it now is."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hpo import storage
from hpo.errors import HpoError

if TYPE_CHECKING:
    from hpo.plan import Plan


class StudyLock:
    """One run of a study at a time: an flock on a file beside its folder, held for the run's life.
    (Local folders only: an s3:// storage cannot be locked this way.)"""

    def __init__(self, path: Path):
        self.path, self.file = path, None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise HpoError(f"This study is running already ({holder}); its lock is {self.path}. Wait for it to "
                           f"end, or stop it (Ctrl-C, or kill that process) and continue it with --resume.") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"process {os.getpid()} on {os.uname().nodename}: {' '.join(sys.argv)}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        self.file.close()  # closing releases the lock


def prepare_study_dir(p: Plan) -> None:
    """Refuse what would mix or lose results; with --overwrite, delete the study's own folder only."""
    options, experiment = p.options, p.experiment_path
    if options.resume and options.overwrite:
        raise HpoError("--resume and --overwrite contradict each other: choose one.")
    if options.resume:
        check_resumable(p)
        return
    if options.extend:  # a new round beside the earlier ones (checked by hpo.rounds.plan_extension)
        return
    remote = storage.is_uri(p.storage_path) and storage.exists(p.storage_path)
    local = p.study_dir.exists() and any(p.study_dir.iterdir())
    if not (remote or local):
        return
    where = p.storage_path if remote else p.study_dir
    if not options.overwrite:
        earlier = json.loads(storage.read_text(f"{p.storage_path}/report/study.json") or "{}")
        origin = (f" (started from {earlier['study_file']})" if earlier.get("study_file")
                  and Path(earlier["study_file"]).resolve() != Path(options.study_file).resolve() else "")
        resumable = storage.exists(f"{experiment}/tuner.pkl")
        raise HpoError(f"Results for study '{p.study.name}' already exist in {where}{origin}. "
                       + ("Add --resume to continue it, " if resumable else
                          f"--resume cannot continue them (no tuner.pkl in {experiment}): ")
                       + "add --overwrite to delete them and start again, or give the study another name or "
                       "--results DIR (--storage URI) to write elsewhere.")
    if p.study_dir.is_symlink():  # deleting through it would delete a folder this study did not make
        raise HpoError(f"{p.study_dir} is a symbolic link (to {os.readlink(p.study_dir)}): --overwrite deletes a "
                       "study's own folder only. Remove the link, or pass --results with the folder it points to.")
    # The study's own folder, and nothing else: its name is a plain folder name (Study.validate).
    assert p.study_dir.parent.is_dir() and p.study_dir.name == p.study.name, p.study_dir
    if p.study_dir.exists():
        shutil.rmtree(p.study_dir)
    if remote:
        storage.delete_dir(p.storage_path)


def check_resumable(p: Plan) -> None:
    """--resume restores exactly the study it claims to, or refuses (exit 2) and says why."""
    experiment = p.experiment_path
    if not storage.exists(f"{experiment}/tuner.pkl"):
        raise HpoError(f"--resume: {experiment} holds no interrupted study to continue (no tuner.pkl). "
                       "Run without --resume to start it.")
    damaged = damaged_record(experiment)
    if damaged:
        raise HpoError(f"--resume: {damaged}. The study cannot be continued: its report in "
                       f"{p.study_dir / 'report'} keeps what finished. Start again with --overwrite.")
    text = storage.read_text(f"{p.storage_path}/report/study.json")
    if text is None:
        raise HpoError(f"--resume: {p.storage_path}/report/study.json is missing, so what this study was started "
                       "with is unknown. Start again with --overwrite.")
    earlier = json.loads(text)
    now = json.loads(json.dumps(p.record(), default=str))  # as study.json holds it
    then = {"study": {k: v for k, v in earlier.get("study", {}).items() if k != "description"},
            "smoke": bool(earlier.get("smoke")),
            "data": earlier.get("data") and {k: earlier["data"].get(k) for k in now["data"]}}
    if not (then["data"] or {}).get("train_images") or not p.data.get("train_images"):
        then.pop("data"), now.pop("data")  # reports before this record, or a cluster (the driver reads no data)
    differences = list(_differences(then, now))
    if differences:
        raise HpoError("--resume: this study was started differently, and a resumed run would mix trials of "
                       "two studies: " + "; ".join(differences) + f". Continue it with the settings it was "
                       f"started with ({earlier.get('command', 'see study.json')}), or start again with --overwrite "
                       "(or give it another name).")


def damaged_record(experiment: str) -> str | None:
    """What is wrong with Ray Tune's record of a local experiment's trials, or None. Ray restores the
    trials from its newest experiment_state-*.json; cut short (a full disk, a kill during a write) Ray
    would start an empty experiment instead, with default configs."""
    if storage.is_uri(experiment):
        return None
    states = sorted(Path(experiment).glob("experiment_state-*.json"))
    try:
        json.loads(states[-1].read_text()) if states else None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        return (f"Ray Tune's record of the trials, {states[-1]}, is damaged ({e}); a full disk or a kill while "
                "it was written leaves it so")
    return None


def _differences(then, now, where=""):
    if isinstance(then, dict) and isinstance(now, dict):
        for key in sorted(set(then) | set(now), key=str):
            yield from _differences(then.get(key), now.get(key), f"{where}.{key}" if where else str(key))
    elif then != now:
        yield f"{where} was {then!r}, now {now!r}"


def relocate(p: Plan) -> None:
    """A study resumed from another folder than it ran in (moved, copied, synced from s3://): Ray's own
    pickled search state is pointed here (hpo.ray_workarounds)."""
    if storage.is_uri(p.experiment_path):
        return
    earlier = json.loads(storage.read_text(f"{p.storage_path}/report/study.json") or "{}")
    old = str(earlier.get("experiment_path", "")).rpartition("/")[0]  # the study folder it ran in
    if old and old != p.storage_path:
        from hpo.ray_workarounds import relocate_search_state
        relocate_search_state(Path(p.experiment_path), old, p.storage_path)
