"""The definition of one study, validated when it is constructed.

A study file under `studies/` builds one `Study(...)` and names it `study`.
Everything that can be wrong with it is found here, before Ray starts, and
reported as an `HpoError` that names the field and the allowed values.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from hpo.errors import HpoError
from hpo.registry import OPTIMIZERS, SCHEDULERS, SEARCHES, has_grid, is_grid


def _sample():
    """Ray Tune's sampler classes, imported late: hpo.run sets Ray's environment
    before Ray is first imported, and the trainable runs where Ray is absent."""
    from ray.tune.search import sample
    return sample

# --smoke: at most this many epochs and trials, training and validation/test images per trial.
SMOKE_EPOCHS, SMOKE_TRIALS, SMOKE_TRAIN, SMOKE_EVAL = 2, 4, 2048, 1024
# ... and at most this much compute per epoch (forward FLOPs x 3 for training, x 1 for evaluation), so a
# heavy model's smoke run (VGG-11 at 224 x 224: 15 GFLOPs per image) is as quick as a small one's.
SMOKE_FLOPS = 4e11  # ~20 s an epoch where one core trains VGG-11 at 224 x 224 at ~20 GFLOP/s
# How a trial ended, in the order reports list them (docs/report-format.md); the first three
# have numbers to compare.
OUTCOMES = ("completed", "stopped_early", "diverged", "failed", "interrupted", "running", "pending")
FINISHED = OUTCOMES[:3]
FINAL = OUTCOMES[:4]  # what a resumed study never runs again: the finished and the failed
# Reported by the trainable every epoch (docs/report-format.md).
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
           "epoch_time_s", "samples_per_s", "lr")


def _number(v):
    """A finite int or float (not a bool: True is an int to Python)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v):
    return _number(v) and v > 0


def _positive_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _non_negative(v):
    return _number(v) and v >= 0


MAX_RESIZE = 1024  # pixels a side: 4x ImageNet's 224; a typo's 100000 would allocate 40 GB a batch
MIN_TIME_BUDGET_MIN = 0.1  # minutes: shorter than starting Ray and one trial, so no trial would ever report

# Space keys the trainable itself understands: default, check, what is allowed.
# Model options (dropout, feature_maps, activation, downsample, feature_size...)
# come from hpo.models.model_options for the study's model.
TRAINABLE_KEYS: dict[str, tuple[Any, Callable[[Any], bool], str]] = {
    "lr": (0.01, _positive, "a finite number > 0"),
    "batch_size": (64, _positive_int, "an integer > 0"),
    "optimizer": ("sgd", lambda v: v in list(OPTIMIZERS), "one of " + ", ".join(OPTIMIZERS)),
    "momentum": (0.0, lambda v: _non_negative(v) and v < 1, "a number in [0, 1)"),
    "weight_decay": (0.0, _non_negative, "a finite number >= 0"),
    "lr_gamma": (1.0, lambda v: _positive(v) and v <= 1, "a number in (0, 1] (StepLR gamma per epoch)"),
    "augment": (False, lambda v: isinstance(v, bool), "True or False (random crop + flip)"),
    "resize": (None, lambda v: v is None or _positive_int(v) and v <= MAX_RESIZE,
               f"None or an integer from 1 to {MAX_RESIZE} (pixels)"),
    "permute_pixels": (False, lambda v: isinstance(v, bool), "True or False"),
    "val_fraction": (1 / 6, lambda v: _positive(v) and v < 1, "a number in (0, 1)"),
    "amp": (False, lambda v: isinstance(v, bool), "True or False (mixed precision on a GPU)"),
    "cuda_graphs": (True, lambda v: isinstance(v, bool),
                    "True or False (on a GPU, the training step captured once as a CUDA graph and replayed)"),
    "channels_last": (True, lambda v: isinstance(v, bool),
                      "True or False (on a CPU, a convolutional model and its images in channels-last memory "
                      "layout: 1.1-1.5x faster an epoch; trials.csv's `layout` says what a trial used)"),
    "fused_seeds": (None, lambda v: v is None or isinstance(v, bool),
                    "None (on a GPU only), True or False (a seed group's seeds trained as one model with "
                    "torch.func.vmap)"),
    "seed": (0, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "model": (None, lambda v: isinstance(v, str) or callable(v),
              'a model name, "package.module:Name" or a class or function of your own (see hpo.models)'),
    "normalize": ("dataset", lambda v: _normalization_ok(v),
                  '"dataset" (its mean/std), "none" (pixels in [0, 1]) or [mean, std] '
                  '(numbers, or one per channel), e.g. [0.5, 0.5]'),
    "variant": (None, lambda v: v is None or isinstance(v, str), "a name (a label: see hpo.variants)"),
}


@dataclass(frozen=True)
class RunSettings:
    """What is the same for every trial of one run (the config is what varies)."""

    dataset: str
    model: str
    epochs: int
    data_dir: str | None = None
    max_train: int | None = None  # --smoke caps the images per trial
    max_eval: int | None = None
    max_flops: float | None = None  # --smoke: compute per epoch, capping the images further (trainable.smoke_caps)


def seed_of(config: dict) -> int:
    """A trial config's seed: its `seed` key, or the repeat index Ray's Repeater gives it (seeds=N with
    seed_groups=False), else the default 0."""
    return int(config.get("seed", config.get("__trial_index__", TRAINABLE_KEYS["seed"][0])))


def trial_options(config: dict) -> tuple[dict, dict]:
    """Split a trial config into the trainable's keys (with defaults) and the model's options."""
    options = {k: v for k, v in config.items() if k not in TRAINABLE_KEYS and not k.startswith("__")}
    keys = {k: config.get(k, default) for k, (default, _, _) in TRAINABLE_KEYS.items()}
    keys["seed"] = seed_of(config)
    return keys, options


def _normalization_ok(v) -> bool:
    if v in ("dataset", "none"):
        return True
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        return False
    mean, std = ([x] if isinstance(x, (int, float)) else x for x in v)
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in [*mean, *std])
    return numbers and len(mean) == len(std) and all(x > 0 for x in std)


# Names people write for the trainable's keys (write-up 003 says "learning rate").
ALIASES = {"learning_rate": "lr", "learningrate": "lr", "bs": "batch_size", "batchsize": "batch_size",
           "optim": "optimizer", "wd": "weight_decay", "l2": "weight_decay", "gamma": "lr_gamma",
           "accuracy": "val_acc", "acc": "val_acc", "loss": "val_loss"}


def suggest(name: str, allowed) -> str:
    if ALIASES.get(str(name).lower()) in allowed:
        return f" Did you mean '{ALIASES[str(name).lower()]}'?"
    close = difflib.get_close_matches(str(name), [str(a) for a in allowed], n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def possible_values(value) -> list | None:
    """The values a space entry can take, or None for a continuous range."""
    if is_grid(value):
        return list(value["grid_search"])
    sample = _sample()
    if isinstance(value, sample.Function) and isinstance(value.func, FromVariant):
        return value.func.distinct()
    if isinstance(value, sample.Categorical):
        return list(value.categories)
    if isinstance(value, sample.Domain):
        return None
    return [value]


def _range_ends(value) -> list:
    """The extreme values of a numeric sampler (tune.uniform, loguniform, randint...)."""
    if isinstance(value, _sample().Integer):
        return [value.lower, value.upper - 1]  # randint's upper bound is exclusive
    return [b for b in (getattr(value, "lower", None), getattr(value, "upper", None)) if b is not None]


def is_varied(value) -> bool:
    values = possible_values(value)
    return values is None or len(values) > 1


def describe(value) -> Any:
    """A JSON-friendly description of a space entry (for study.json)."""
    if is_grid(value):
        return {"grid_search": list(value["grid_search"])}
    sample = _sample()
    if isinstance(value, sample.Categorical):
        return {"choice": list(value.categories)}
    if isinstance(value, (sample.Float, sample.Integer)):
        sampler = type(value.get_sampler()).__name__.lower()
        kind = "loguniform" if "log" in sampler else ("randint" if isinstance(value, sample.Integer) else "uniform")
        return {kind: [value.lower, value.upper]}
    if isinstance(value, sample.Function) and isinstance(value.func, FromVariant):
        return {"per_variant": dict(value.func.values)}
    if isinstance(value, sample.Function):  # its name, not its repr: that has a memory address
        return {"sample_from": getattr(value.func, "__qualname__", type(value.func).__name__)}
    if isinstance(value, sample.Domain):
        return {"sampler": type(value).__name__}
    return value


def _plain(value):
    """JSON-friendly: a model of your own (hpo.models.ModelRef, or a callable) as its label."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if callable(value):
        from hpo.models import as_model
        return str(as_model(value))
    return value


def _map_values(value, f):
    """A space entry with f applied to each value it can take (a constant, grid_search, tune.choice or
    hpo.variants); other samplers as they are."""
    sample = _sample()
    if is_grid(value):
        return {"grid_search": [f(v) for v in value["grid_search"]]}
    if isinstance(value, sample.Categorical):
        return sample.Categorical([f(v) for v in value.categories]).uniform()
    if isinstance(value, sample.Function) and isinstance(value.func, FromVariant):
        from ray import tune
        return tune.sample_from(FromVariant(value.func.key, {n: f(v) for n, v in value.func.values.items()}))
    if isinstance(value, sample.Domain):
        return value
    return f(value)


class FromVariant:
    """The value of one key in the variant a trial runs (see `variants`); Ray Tune calls it with the
    trial's config once the grid over "variant" is resolved."""

    def __init__(self, key: str, values: dict[str, Any]):
        self.key, self.values = key, values

    def __call__(self, config):
        return self.values[config["variant"]]

    def distinct(self) -> list:
        found: list = []
        for v in self.values.values():
            if v not in found:
                found.append(v)
        return found


def variants(**named: dict) -> dict:
    """Space entries for a grid over named bundles of settings (configurations that are not a product of
    independent keys, like write-up 001's models 1-3):

        space={**variants(model1={"optimizer": "sgd", "batch_size": 100},
                          model2={"optimizer": "adam", "batch_size": 256}), "lr": 0.01}

    gives "variant": tune.grid_search(["model1", "model2"]) and, for every key the bundles set, a
    tune.sample_from that Ray Tune resolves to the value of the trial's variant. So trials.csv has
    config/variant (the name) and the real value of every key. Every bundle sets the same keys.
    """
    from ray import tune

    if not named:
        raise HpoError("variants() needs at least one named bundle, e.g. variants(a={\"lr\": 0.1}).")
    keys = {k for bundle in named.values() for k in bundle}
    for name, bundle in named.items():
        if not isinstance(bundle, dict):
            raise HpoError(f"variants(): bundle {name!r} must be a dict of space keys to values.")
        missing = sorted(keys - set(bundle))
        if missing:
            raise HpoError(f"variants(): bundle {name!r} does not set {', '.join(missing)}: every bundle "
                           "sets the same keys (give the value it shares with the others).")
        if "variant" in bundle:
            raise HpoError("variants(): 'variant' is the bundle's name; it cannot be a key inside one.")
    space: dict[str, Any] = {"variant": tune.grid_search(list(named))}
    for key in sorted(keys, key=lambda k: list(next(iter(named.values()))).index(k)):
        space[key] = tune.sample_from(FromVariant(key, {n: b[key] for n, b in named.items()}))
    return space


@dataclass
class Study:
    """One study: dataset, architecture, Ray Tune search space, budget.

    See docs/study-file.md for every field and space key.
    """

    name: str
    dataset: str
    model: str
    space: dict = field(default_factory=dict)
    epochs: int = 10
    metric: str | list[str] = "val_acc"  # a list: multi-objective search (Optuna), e.g. ["val_acc", "params"]
    mode: str | list[str] = "max"  # one per metric
    search: str = "grid"
    scheduler: str = "fifo"
    num_samples: int = 1
    seeds: int = 1
    grace_period: int = 1          # ASHA: epochs every trial runs before it can be stopped
    reduction_factor: int = 3      # ASHA: 1/reduction_factor of trials survive each rung
    time_budget_min: float | None = None  # stop the whole study after this many minutes (Ray's time_budget_s)
    seed_groups: bool | None = None  # a configuration's seeds as one Ray trial; None: where something judges
    #                                  configurations (ASHA, a search), not for a grid with FIFO (seed_grouped)
    description: str = ""          # filled from the study file's docstring when empty

    def __post_init__(self):
        self.validate()

    # -- validation ---------------------------------------------------------
    def validate(self) -> None:
        def fail(field_name, message):
            raise HpoError(f"Study '{self.name}': field '{field_name}' {message}")

        # It names a folder that --overwrite deletes: '.', '..' or a hidden name would be another folder.
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise HpoError(f"Study field 'name' must be a folder name of letters, digits, '_', '-', '.' that "
                           f"starts with a letter or digit; got {self.name!r}.")
        from hpo.data import check_dataset
        from hpo.models import as_model

        try:  # folder:/npz: paths made absolute: trials run in other working directories
            self.dataset = check_dataset(self.dataset)
        except HpoError as e:
            raise HpoError(f"Study '{self.name}': field 'dataset': {e}") from None
        # Your own model: a callable becomes its import path, or a ModelRef (hpo.models) that reads as
        # "studies/x.py:MyNet" and pickles to Ray's workers and into checkpoints.
        self.model = as_model(self.model)
        if isinstance(self.space, dict) and "model" in self.space:
            self.space = {**self.space, "model": _map_values(self.space["model"], as_model)}
        self._check_choice("search", self.search, SEARCHES)
        self._check_choice("scheduler", self.scheduler, SCHEDULERS)
        self._check_objectives()
        for name in ("epochs", "num_samples", "seeds", "grace_period", "reduction_factor"):
            if not _positive_int(getattr(self, name)):
                fail(name, f"must be an integer > 0; got {getattr(self, name)!r}.")
        if self.time_budget_min is not None and not (_positive(self.time_budget_min)
                                                     and self.time_budget_min >= MIN_TIME_BUDGET_MIN):
            fail("time_budget_min", f"must be a number of minutes >= {MIN_TIME_BUDGET_MIN:g} (minutes > 0), or "
                                    f"None; got {self.time_budget_min!r}.")
        if not isinstance(self.space, dict):
            fail("space", "must be a dict of space keys to constants or tune.* samplers; "
                          f"got {type(self.space).__name__}.")
        self._check_variants()
        self._check_normalization()
        if self.seed_groups not in (None, True, False):
            fail("seed_groups", f"must be True, False or None (automatic); got {self.seed_groups!r}.")

        from hpo.models import check_model_name, model_options

        models = self.models()
        for m in models:
            try:
                check_model_name(m)
            except HpoError as e:
                raise HpoError(f"Study '{self.name}': field 'model': {e}") from None
        allowed = dict(TRAINABLE_KEYS)
        model_keys = [set(model_options(m)) for m in models]
        for key, value in self.space.items():
            if key in allowed:
                self._check_values(key, value, *allowed[key][1:])
                continue
            missing = [m for m, keys in zip(models, model_keys) if key not in keys]
            if missing:
                known = sorted(set(allowed).union(*model_keys))
                options = " ".join(f"Model '{m}' takes: {', '.join(sorted(model_options(m))) or 'no options'}."
                                   for m in models)
                raise HpoError(
                    f"Study '{self.name}': unknown space key '{key}'.{suggest(key, known)} The trainable "
                    f"takes: {', '.join(sorted(allowed))}. {options}")
        self._check_sampled_functions()
        self._check_models_build()
        own = [m for m in possible_values(self.space.get("model")) or [] if not isinstance(m, str)]
        search = SEARCHES[self.search]
        if search.values_as_text and is_varied(self.space.get("model")) and own:
            fail("search", f"is '{self.search}', whose Optuna journal holds a choice's values as text, so it cannot "
                 f"choose between classes defined in the study file ({', '.join(map(str, own))}): put them in a "
                 "module and give their import paths (\"package.module:Name\"), or use search='grid' "
                 "with tune.grid_search.")
        if not search.takes_grid and has_grid(self.space):
            fail("search", f"is '{self.search}', which cannot search a tune.grid_search: use tune.choice([...]) "
                 "for it, or search='grid'.")
        if search.samples and not any(is_varied(v) for v in self.space.values()):
            fail("search", f"is '{self.search}' but the space has nothing to search (only constants): "
                 "use tune.uniform/loguniform/choice/randint, or search='grid'.")

    def _check_models_build(self) -> None:
        """Build every model variant the space can ask for on PyTorch's meta device (no memory,
        no compute), so a bad option value or an image too small for the model fails now."""
        from hpo.data import dataset_info
        from hpo.models import check_build, model_options

        info = dataset_info(self.dataset, read=False)  # a torchvision:NAME dataset is not read here
        for model in self.models():
            keys = [k for k in self.space if k in model_options(model) or k == "resize"]
            values = [possible_values(self.space[k]) or _range_ends(self.space[k]) for k in keys]
            for combo in itertools.islice(itertools.product(*values), 64):
                options = dict(zip(keys, combo))
                size = options.pop("resize", None) or info.size
                try:
                    check_build(model, in_channels=info.channels, num_classes=info.num_classes,
                                image_size=size, **options)
                except HpoError as e:
                    raise HpoError(f"Study '{self.name}' ({self.dataset}, {size}x{size} images): {e}") from None
                except Exception as e:  # a value the model's own checks let through (e.g. 1.8e8 feature maps)
                    raise HpoError(f"Study '{self.name}': model {model!r} cannot be built with {options} on "
                                   f"{size}x{size} images: {type(e).__name__}: {' '.join(str(e).split())[:300]}") \
                        from None

    def _check_objectives(self) -> None:
        """One metric and mode, or (multi-objective search) a list of each, of the same length."""
        if not isinstance(self.metric, (list, tuple)):
            self._check_choice("metric", self.metric, METRICS)
            self._check_choice("mode", self.mode, ("min", "max"))
            return
        objectives = (*METRICS, "params")
        modes = self.mode if isinstance(self.mode, (list, tuple)) else None
        if len(self.metric) < 2 or modes is None or len(modes) != len(self.metric):
            raise HpoError(f"Study '{self.name}': a multi-objective study gives 'metric' as a list of two or more "
                           f"and 'mode' as a list of the same length, e.g. metric=['val_acc', 'params'], "
                           f"mode=['max', 'min']; got metric={self.metric!r}, mode={self.mode!r}.")
        for m in self.metric:
            self._check_choice("metric", m, objectives)
        for m in modes:
            self._check_choice("mode", m, ("min", "max"))
        self.metric, self.mode = list(self.metric), list(modes)
        if not SEARCHES[self.search].multi_objective:
            able = " or ".join(f"'{n}'" for n, s in SEARCHES.items() if s.multi_objective)
            raise HpoError(f"Study '{self.name}': a multi-objective study needs search={able} "
                           f"(Optuna's multi-objective samplers); got search={self.search!r}.")
        if SCHEDULERS[self.scheduler].stops_early:
            raise HpoError(f"Study '{self.name}': a multi-objective study cannot use scheduler="
                           f"{self.scheduler!r}: ASHA ranks trials by one metric at each rung, and no single "
                           "metric says which trials are on the Pareto front. Use scheduler='fifo'.")
        if self.seeds > 1:
            raise HpoError(f"Study '{self.name}': a multi-objective study runs one seed per configuration: Ray's "
                           "Repeater averages a single metric over seeds. Use seeds=1 (or num_samples for more).")

    @property
    def primary_metric(self) -> str:
        """The metric tables and progress rank by: the first objective of a multi-objective study."""
        return self.metric[0] if isinstance(self.metric, list) else self.metric

    @property
    def primary_mode(self) -> str:
        return self.mode[0] if isinstance(self.mode, list) else self.mode

    def _check_sampled_functions(self) -> None:
        """tune.sample_from values are only known once Ray Tune resolves a config: resolve a few
        configs as Ray Tune would and check what they give."""
        sample = _sample()
        functions = [k for k, v in self.space.items() if isinstance(v, sample.Function)
                     and not isinstance(v.func, FromVariant) and k in TRAINABLE_KEYS]
        if not functions:
            return
        from ray.tune.search.variant_generator import generate_variants

        for _, config in itertools.islice(generate_variants(self.space, random_state=0), 32):
            for key in functions:
                _, check, allowed_text = TRAINABLE_KEYS[key]
                if not check(config[key]):
                    raise HpoError(f"Study '{self.name}': space key '{key}' is a tune.sample_from that gave "
                                   f"{config[key]!r}; it must be {allowed_text}.")

    def _check_variants(self) -> None:
        """Keys set per variant (hpo.variants) need a "variant" key naming one of their bundles."""
        sample = _sample()
        bundled = {k: v.func for k, v in self.space.items()
                   if isinstance(v, sample.Function) and isinstance(v.func, FromVariant)}
        if not bundled:
            return
        names = possible_values(self.space.get("variant"))
        known = list(next(iter(bundled.values())).values)
        unknown = [n for n in names or [None] if n not in known]
        if "variant" not in self.space or unknown:
            got = unknown[0] if unknown else None
            hint = suggest(got, known) if got else ""
            raise HpoError(f"Study '{self.name}': space key 'variant' must name the bundles of hpo.variants "
                           f"({', '.join(known)}); got {got!r}.{hint}")

    def _check_normalization(self) -> None:
        from hpo.data import dataset_info, normalization

        for v in possible_values(self.space.get("normalize", "dataset")) or []:
            if _normalization_ok(v):
                try:
                    normalization(dataset_info(self.dataset, read=False), v)
                except HpoError as e:
                    raise HpoError(f"Study '{self.name}': space key 'normalize': {e}") from None

    def _check_choice(self, name, value, allowed):
        if value not in list(allowed):  # a list: a registry is a dict, and the value may be unhashable
            raise HpoError(f"Study '{self.name}': field '{name}' is {value!r}; allowed: "
                           f"{', '.join(allowed)}.{suggest(value, allowed)}")

    def _check_values(self, key, value, check, allowed_text):
        if is_grid(value) and not value["grid_search"]:
            raise HpoError(f"Study '{self.name}': space key '{key}' is an empty tune.grid_search([]): "
                           "the grid would have no trials. Give at least one value.")
        for v in possible_values(value) or _range_ends(value):
            if not check(v):
                raise HpoError(f"Study '{self.name}': space key '{key}' has value {v!r}; it must be {allowed_text}.")

    # -- what the runner needs ------------------------------------------------
    def models(self) -> list[str]:
        values = possible_values(self.space.get("model", self.model))
        if values is None:
            raise HpoError(f"Study '{self.name}': space key 'model' must be a constant, "
                           "tune.grid_search([...]) or tune.choice([...]) of model names.")
        return values

    def varied_keys(self) -> list[str]:
        return [k for k, v in self.space.items() if is_varied(v) and k != "seed"]

    def grid_size(self) -> int:
        sizes = [len(v["grid_search"]) for v in self.space.values() if is_grid(v)]
        return math.prod(sizes) if sizes else 1

    def asha_rungs(self) -> set[int]:
        """The epochs at which ASHA may stop a trial (Ray's ASHAScheduler milestones, one bracket)."""
        if not SCHEDULERS[self.scheduler].stops_early:
            return set()
        rungs, epoch = set(), self.grace_period
        while epoch < self.epochs:
            rungs.add(epoch)
            epoch *= self.reduction_factor
        return rungs

    @property
    def seed_grouped(self) -> bool:
        """Whether a configuration's seeds train as one Ray trial (a seed group), so that ASHA's rungs and the
        search compare configurations by their seed mean: by default where a scheduler stops trials or a
        search samples configurations; a grid with FIFO keeps one trial per seed (every trial runs to its
        end, and separate trials pack the machine's slots better)."""
        if self.seeds <= 1:
            return False
        if self.seed_groups is not None:
            return self.seed_groups
        return SCHEDULERS[self.scheduler].stops_early or SEARCHES[self.search].samples

    def ray_trials(self) -> int:
        """Ray Tune's trials: num_trials, or one per configuration where seeds train as a group."""
        return self.num_trials() // self.seeds if self.seed_grouped else self.num_trials()

    def num_trials(self) -> int:
        # a grid's points, and random search's samples drawn per grid point; a grid-less search has one
        per_config = self.grid_size() if SEARCHES[self.search].takes_grid else 1
        return per_config * self.num_samples * self.seeds

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["model"] = _plain(self.model)  # your own model by its label, e.g. "studies/x.py:MyNet"
        data["space"] = {k: _plain(describe(v)) for k, v in self.space.items()}
        return data

    def smoke(self) -> "Study":
        """The same study, shrunk to a quick check of the whole pipeline (--smoke)."""
        space = dict(self.space)
        grids = {k: list(v["grid_search"]) for k, v in space.items() if is_grid(v)}
        samples = SEARCHES[self.search].samples
        while not samples and grids and math.prod(map(len, grids.values())) > SMOKE_TRIALS:
            longest = max(grids, key=lambda k: len(grids[k]))
            grids[longest].pop()  # keep the first values: the smoke study still varies what the study varies
        space.update({k: {"grid_search": v} for k, v in grids.items()})
        return dataclasses.replace(self, space=space, epochs=min(self.epochs, SMOKE_EPOCHS),
                                   num_samples=min(self.num_samples, SMOKE_TRIALS) if samples else 1,
                                   seeds=1, grace_period=1)

    def with_overrides(self, overrides: dict[str, Any]) -> "Study":
        """A copy with `--set key=value` overrides applied (a field or a space key)."""
        fields = {f.name for f in dataclasses.fields(self)}
        changes, space = {}, dict(self.space)
        for key, value in overrides.items():
            if key in fields and key != "space":
                current = getattr(self, key)
                if isinstance(current, int) and not isinstance(current, bool):
                    if not (isinstance(value, int) and not isinstance(value, bool)):
                        raise HpoError(f"--set {key}={value!r}: '{key}' must be an integer.")
                elif isinstance(current, str) and not isinstance(value, str):
                    value = str(value)
                changes[key] = value
            else:
                space[key] = value  # validated below like any space key
        try:
            return dataclasses.replace(self, space=space, **changes)
        except HpoError as e:
            raise HpoError(f"--set: {e}") from None



def parse_value(text: str):
    """'0.01' -> 0.01, 'True' -> True, '[1, 2]' -> [1, 2]; anything else stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(items) -> dict[str, Any]:
    """`--set KEY=VALUE` items -> {key: value} for `Study.with_overrides` (or a trial config)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HpoError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=0.001 or --set dataset=fashion_mnist.")
        overrides[key.strip()] = parse_value(value.strip())
    return overrides
