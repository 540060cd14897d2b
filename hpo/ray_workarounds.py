"""Where hpo reaches into Ray beyond its public API: each function names the Ray behaviour it works
around and is tested against the Ray that pyproject.toml pins (an upper bound, so a new Ray is a
deliberate upgrade that runs these tests first)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def processes_in_own_session():
    """Ray processes started inside (an embedded Ray's GCS, raylet and the workers the raylet starts) get
    a process session of their own. Ray starts them in the driver's process group, so a signal to the
    whole group (Slurm's time limit and scancel, systemd, a container runtime, GNU timeout, a closed
    terminal) killed them with the driver, which then waited 60 s for its dead GCS and stopped with no
    report. Outside the group only the driver gets the signal, and it stops them as Ctrl-C does. Ray's
    kernel fate-sharing (PR_SET_PDEATHSIG, set in Ray's own preexec_fn) still ends them with the driver.
    No public option: Ray starts each with services.ConsolePopen, a subprocess.Popen."""
    from ray._private import services

    original = services.ConsolePopen

    class OwnSession(original):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("start_new_session", True)
            super().__init__(*args, **kwargs)

    services.ConsolePopen = OwnSession
    try:
        yield
    finally:
        services.ConsolePopen = original
