"""Every named choice of a study and what it builds: searches, schedulers, optimizers.

Validation (hpo.study) reads the names and what each search and scheduler can
do (`Search`, `Scheduler`: fields, never names compared), hpo.run and
hpo.trainable call the builders, `python -m hpo.run --help` lists the
descriptions, the analysis reads the capabilities. A new scheduler or optimizer
is one entry here. Ray, Optuna and torch are imported inside the builders: the
study is validated before Ray is first imported (hpo.env).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

# A trial config key: the seeds one Ray trial trains as a seed group (hpo.trainable.SeedGroup).
GROUP_KEY = "__seeds__"
# A trial config key: the epochs an --extend round's new seeds of an earlier configuration train, no fewer and no
# more, whatever the scheduler (hpo.rounds.plan_extension: as many as ASHA let its earlier seeds train).
EPOCHS_KEY = "__epochs__"


def is_grid(value) -> bool:
    """Whether a space entry is a tune.grid_search (Ray Tune writes it as {"grid_search": [...]})."""
    return isinstance(value, dict) and set(value) == {"grid_search"}


def has_grid(space: dict) -> bool:
    return any(is_grid(v) for v in space.values())


@dataclass(frozen=True)
class Choice:
    description: str  # shown by `python -m hpo.run --help`
    build: Callable[..., Any]


@dataclass(frozen=True)
class Search(Choice):
    """What a search can do, read wherever a study is checked or analysed (never its name)."""

    samples: bool = False  # draws configurations (tune.choice, uniform...), so the space must vary something
    takes_grid: bool = True  # can run a tune.grid_search
    learns: bool = False  # its suggestions learn from earlier trials (TPE), also from ASHA's early stops
    multi_objective: bool = False  # metric=[...], mode=[...]: a Pareto front (Optuna's samplers)
    values_as_text: bool = False  # keeps a choice's values as text (Optuna's journal): no study-file classes


@dataclass(frozen=True)
class Scheduler(Choice):
    stops_early: bool = False  # stops trials at rungs (so a multi-objective study cannot use it)


def seeded_space(study) -> dict:
    """The space Ray Tune runs: the study's, with its seeds for seeds > 1: a grid over `seed` (one trial per
    seed), or the list of seeds a seed group trains (hpo.study.Study.seed_grouped)."""
    from ray import tune

    space = dict(study.space)
    if study.seed_grouped:
        space[GROUP_KEY] = list(range(study.seeds))
    elif study.seeds > 1 and "seed" not in space:
        space["seed"] = tune.grid_search(list(range(study.seeds)))
    return space


# -- searches: build(study, space, max_concurrent, journal, seed) -> (search_alg, num_samples); may add "seed"
# to space. `journal`: a file for Optuna's own record of the search (optuna-dashboard reads it); a search
# that continues in it (an --extend round, hpo.rounds) finds its earlier trials there. `seed`: the sampler's
# (an --extend round's own, or its first random draws would repeat the first round's).
def _variant_generator(study, space: dict, max_concurrent, journal=None, seed: int = 0):
    """Ray's own variant generator: grids, and random samplers drawn num_samples times per grid point."""
    from ray.tune.search import BasicVariantGenerator

    space.update(seeded_space(study))
    # It takes the concurrency limit itself: Tune ignores max_concurrent_trials for a generator passed in.
    return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent or 0), study.num_samples


def _optuna(sampler_name: str):
    def build(study, space: dict, max_concurrent, journal=None, seed: int = 0):
        import optuna
        from ray.tune.search import Repeater

        from hpo.searchers import PrunedWhenStopped

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # its INFO lines would interleave our status
        sampler = getattr(optuna.samplers, sampler_name)(seed=seed)  # seeded: a study is reproducible
        storage = None
        if journal:
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend
            storage = JournalStorage(JournalFileBackend(str(journal)))
        objectives = {"metric": study.metric, "mode": study.mode} if isinstance(study.metric, list) else {}
        # Ray's OptunaSearch, with trials that ASHA or the time budget stopped told to Optuna as PRUNED.
        search_alg = PrunedWhenStopped(sampler=sampler, storage=storage, study_name=study.name if journal else None,
                                       epochs=study.epochs, **objectives)
        num_samples = study.num_samples
        if study.seed_grouped:  # each trial trains every seed (hpo.trainable.SeedGroup)
            space[GROUP_KEY] = list(range(study.seeds))
        elif study.seeds > 1:  # each sampled configuration `seeds` times, seed = the repeat's index
            search_alg = Repeater(search_alg, repeat=study.seeds, set_index=True)
            num_samples *= study.seeds
        return search_alg, num_samples
    return build


def _random(study, space: dict, max_concurrent, journal=None, seed: int = 0):
    if has_grid(space):  # random samplers inside a grid: Ray's generator draws them per grid point
        return _variant_generator(study, space, max_concurrent, seed=seed)
    return _optuna("RandomSampler")(study, space, max_concurrent, journal, seed)


SEARCHES: dict[str, Search] = {
    "grid": Search("Ray Tune's grid search (BasicVariantGenerator)", _variant_generator),
    "random": Search("random search (Optuna's seeded RandomSampler; Ray's generator inside a grid)", _random,
                     samples=True, multi_objective=True, values_as_text=True),
    "optuna": Search("Optuna TPE (seeded TPESampler through Ray Tune's OptunaSearch)", _optuna("TPESampler"),
                     samples=True, takes_grid=False, learns=True, multi_objective=True, values_as_text=True),
}


# -- schedulers: build(study) -> a Ray Tune scheduler
def _fifo(study):
    from ray.tune.schedulers import FIFOScheduler
    return FIFOScheduler()


def _asha(study):
    from hpo.searchers import AshaBesideFixedEpochs
    return AshaBesideFixedEpochs(time_attr="training_iteration", max_t=study.epochs, grace_period=study.grace_period,
                                 reduction_factor=study.reduction_factor, fixed_key=EPOCHS_KEY)


SCHEDULERS: dict[str, Scheduler] = {
    "fifo": Scheduler("every trial runs all its epochs", _fifo),
    "asha": Scheduler("ASHA early stopping (Ray Tune's ASHAScheduler over epochs)", _asha, stops_early=True),
}


# -- optimizers: build(params, lr, momentum, weight_decay, fused) -> a torch optimizer.
# `fused`: one kernel for the whole update (None = PyTorch's default, foreach). On a GPU a small
# model's step is bound by kernel launches, so the trainable fuses there.
# `capturable`: safe to capture in a CUDA graph (a tensor learning rate on the device, no host sync in the
# step); SGD has no such flag: its fused step is capturable as it is.
def _torch_optimizer(name: str, momentum: bool, fused: bool, capturable: bool):
    def build(params, lr, momentum_value, weight_decay, fused_value=None, capturable_value=False):
        import torch
        kwargs = {"lr": lr, "weight_decay": weight_decay}
        if momentum:
            kwargs["momentum"] = momentum_value
        if fused:
            kwargs["fused"] = fused_value
        if capturable and capturable_value:
            kwargs["capturable"] = True
        return getattr(torch.optim, name)(params, **kwargs)
    return build


OPTIMIZERS: dict[str, Choice] = {
    "sgd": Choice("SGD (with momentum)", _torch_optimizer("SGD", momentum=True, fused=True, capturable=False)),
    "adam": Choice("Adam", _torch_optimizer("Adam", momentum=False, fused=True, capturable=True)),
    "adamw": Choice("AdamW", _torch_optimizer("AdamW", momentum=False, fused=True, capturable=True)),
    "rmsprop": Choice("RMSprop (with momentum)",
                      _torch_optimizer("RMSprop", momentum=True, fused=False, capturable=True)),
}


# -- trackers (--log NAME): build(study, study_dir) -> a Ray Tune logger callback. Optional extras:
# `uv sync --extra NAME` installs what each needs.
def _mlflow(study, study_dir):
    import os

    from ray.air.integrations.mlflow import MLflowLoggerCallback

    # A local store inside the study folder unless the user points MLflow elsewhere.
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{study_dir}/mlflow.db"  # MLflow 3: no file store
    return MLflowLoggerCallback(tracking_uri=uri, experiment_name=study.name, save_artifact=False)


def _wandb(study, study_dir):
    from ray.air.integrations.wandb import WandbLoggerCallback

    # Offline (run folders under the study folder, `wandb sync` uploads them) unless logged in: hpo.run
    # sets WANDB_MODE before Ray starts, so Ray's logging actor sees it too.
    return WandbLoggerCallback(project=study.name, dir=str(study_dir))


TRACKERS: dict[str, Choice] = {
    "mlflow": Choice("MLflow (Ray Tune's MLflowLoggerCallback); module mlflow", _mlflow),
    "wandb": Choice("Weights & Biases (Ray Tune's WandbLoggerCallback); module wandb", _wandb),
}
