"""The report's outcome of a trial, from its Ray Tune status and the epochs it reported."""

from types import SimpleNamespace

from ray import tune

from hpo import Study
from hpo.report import outcome


def test_asha_rungs_are_ray_s_milestones():
    def study(**fields):
        return Study(name="s", dataset="mnist", model="fc2", space={"lr": tune.loguniform(1e-3, 1e-1)},
                     search="optuna", scheduler="asha", num_samples=4, **fields)

    assert study(epochs=15, grace_period=3, reduction_factor=3).asha_rungs() == {3, 9}
    assert study(epochs=12, grace_period=2, reduction_factor=3).asha_rungs() == {2, 6}
    assert study(epochs=10, grace_period=1, reduction_factor=2).asha_rungs() == {1, 2, 4, 8}
    assert Study(name="g", dataset="mnist", model="fc2", epochs=10).asha_rungs() == set()


def test_a_trial_ended_off_the_rungs_was_interrupted_not_stopped_early():
    asha = Study(name="s", dataset="mnist", model="fc2", space={"lr": tune.loguniform(1e-3, 1e-1)},
                 search="optuna", scheduler="asha", num_samples=4, epochs=15, grace_period=3)
    fifo = Study(name="f", dataset="mnist", model="fc2", epochs=15)

    def ended(n_epochs, status="TERMINATED", study=asha, **last):
        epochs = {e: {"epoch": e, **(last if e == n_epochs else {})} for e in range(1, n_epochs + 1)}
        return outcome(SimpleNamespace(status=status, last_result=epochs.get(n_epochs)), epochs, study)

    assert ended(15) == "completed"
    assert ended(3) == ended(9) == "stopped_early"  # ASHA's rungs
    assert ended(8) == ended(0) == "interrupted"  # Ctrl-C mid-way, or before its first epoch
    assert ended(3, study=fifo) == "interrupted"  # FIFO stops nothing early
    assert ended(4, status="RUNNING") == "running" and ended(0, status="PENDING") == "pending"
    assert ended(5, diverged=True) == "diverged" and ended(5, status="ERROR") == "failed"
