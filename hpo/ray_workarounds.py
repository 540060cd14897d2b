"""Where hpo reaches into Ray beyond its public API: each function names the Ray behaviour it works
around and is tested against the Ray that pyproject.toml pins (an upper bound, so a new Ray is a
deliberate upgrade that runs these tests first). Two more live with the searchers:
hpo.searchers.PrunedWhenStopped reads OptunaSearch's private trial records, and
hpo.searchers.AshaBesideFixedEpochs removes a trial from ASHAScheduler's private `_trial_info`."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


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


def start_local_ray(**options):
    """A new Ray of this driver's own (address="local", even where `ray start` left its address in /tmp/ray
    for ray.init() to join), its processes in a session of their own (above), and its traffic on
    127.0.0.1: on a machine with several addresses Ray otherwise picks one of them for its GCS and raylet.
    `_node_ip_address` is a private ray.init argument (Ray 2.60); `ray start` has it as --node-ip-address."""
    import ray

    with processes_in_own_session():
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", **options)


def trial_folder_name(trial) -> str | None:
    """A Ray Tune trial's folder inside the experiment folder (e.g. "train_abc12_00000_0_lr=0.1_..."), or
    None before it has one. Ray keeps it on the trial's private StorageContext (Ray 2.60)."""
    storage = getattr(trial, "storage", None)
    return getattr(storage, "trial_dir_name", None) if storage is not None else None


def replace_restored_callbacks(tuner, callbacks) -> None:
    """Tuner.restore brings back the callbacks pickled by the first run, with that run's paths: a moved or
    copied study would write its report into the old folder. This run's callbacks replace them. Ray's
    Tuner has no public setter (ray#42221: restore is "not meant for modifying")."""
    tuner._local_tuner.get_run_config().callbacks = list(callbacks)


def relocate_search_state(experiment: Path, old: str, new: str) -> None:
    """A moved or copied study: Ray Tune moves the trials it restores to the new folder, but the search
    state it pickled (basic-variant-state-*.json, searcher-state-*.pkl...) keeps the original paths: the
    experiment's storage, so trials the searcher creates after the resume would write their checkpoints
    into the ORIGINAL folder (seen with Ray 2.60), and Optuna's journal file. Point them at this run's
    folder (`old` -> `new`, the study folders) before Ray reads them. Ray's pickled objects: no public API."""
    import ray.cloudpickle as cloudpickle

    def relocate(obj, seen, depth=0) -> bool:
        """Rewrites strings under the old folder in place (a StorageContext's storage_fs_path, Optuna's
        journal path); whether it changed any."""
        if id(obj) in seen or depth > 12:
            return False
        seen.add(id(obj))
        items = (obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list)
                 else vars(obj).items() if hasattr(obj, "__dict__") and not isinstance(obj, type) else ())
        changed = False
        for key, value in list(items):
            if isinstance(value, str) and (value == old or value.startswith(old + "/")):
                relocated = new + value[len(old):]
                if isinstance(obj, (dict, list)):
                    obj[key] = relocated
                else:
                    setattr(obj, key, relocated)
                changed = True
            elif isinstance(value, (dict, list, tuple)) or hasattr(value, "__dict__"):
                changed |= relocate(value, seen, depth + 1)
        if isinstance(obj, tuple):
            changed |= any([relocate(v, seen, depth + 1) for v in obj])
        return changed

    for path in Path(experiment).glob("*-state-*"):
        if path.name.startswith("experiment_state-"):
            continue  # Ray's JSON record of the trials: Ray relocates those itself
        try:
            state = cloudpickle.loads(path.read_bytes())
        except Exception:
            continue  # not a pickled search state
        if relocate(state, set()):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(cloudpickle.dumps(state))
            os.replace(tmp, path)
