"""A full disk must leave a study that can be resumed.

Ray Tune rewrites its record of the trials (`experiment_state-*.json`, the searcher's state) in place,
and its syncer copies it into the study folder: a disk that fills during that copy leaves a record cut
mid-string, which no `Tuner.restore` can read (docs/ray-notes.md). So `DiskWatch` stops the study as
Ctrl-C does (Ray Tune saves its state, every unfinished trial stays resumable) while the disk still
has room for what one more step writes; `disk_full` recognises the error of a disk that filled anyway.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import time
from pathlib import Path

from ray import tune

MB = 1024 * 1024


def disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it wraps, is a full disk."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC or "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _size(path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class DiskWatch(tune.Callback):
    """Stops the study (SIGINT to Ray Tune's own handler: a clean stop) when the disk holding the study
    folder has less room than a step may write: twice Ray's record of the trials (rewritten in place),
    a new checkpoint for every running trial beside the two Ray keeps, twice the report files (written
    through a temporary copy), and MARGIN. `stopped` is (free, needed) bytes once it stopped."""

    CHECK_EVERY_S = 1.0
    MARGIN = MB // 4

    def __init__(self, study_dir: Path, experiment_dir: Path):
        self.study_dir, self.experiment_dir = Path(study_dir), Path(experiment_dir)
        self.checkpoint_size = 0  # the largest state.pt seen so far
        self.stopped: tuple[int, int] | None = None
        self.last, self.needed = -float("inf"), 0

    def room_needed(self, trials) -> int:
        running = 0
        for trial in trials:
            running += trial.status == "RUNNING"
            checkpoint = trial.checkpoint
            if checkpoint is not None:
                self.checkpoint_size = max(self.checkpoint_size, _size(Path(checkpoint.path) / "state.pt"))
        with os.scandir(self.experiment_dir) as entries:  # Ray's record: a handful of files
            record = sum(e.stat().st_size for e in entries if e.is_file())
        report = sum(_size(f) for f in (self.study_dir / "report").glob("*.*"))
        return 2 * record + (running + 1) * self.checkpoint_size + 2 * report + self.MARGIN

    def on_step_begin(self, iteration, trials, **info):
        """The free space at every step (one statvfs: a trial can write many epochs a second); what a step
        needs, which reads the sizes of a few files per trial, about every CHECK_EVERY_S."""
        if self.stopped or not self.experiment_dir.is_dir():
            return
        now = time.monotonic()
        if now - self.last >= self.CHECK_EVERY_S:
            self.last, self.needed = now, self.room_needed(trials)
        free = shutil.disk_usage(self.study_dir).free
        if free < self.needed:
            self.stopped = (free, self.needed)
            signal.raise_signal(signal.SIGINT)

    def message(self) -> str:
        free, needed = self.stopped
        return (f"The disk holding {self.study_dir} is nearly full ({free / MB:.1f} MB free; a step of this study "
                f"writes up to {needed / MB:.1f} MB): the study stopped while there was room to save its state.")

    def __getstate__(self):  # Tuner pickles its callbacks (tuner.pkl): a resume starts a new watch
        return {**self.__dict__, "stopped": None, "last": -float("inf")}
