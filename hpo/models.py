"""Architecture registry: every network of the five write-ups, plus "torchvision:NAME", plus models of
your own (a callable, or an import path "package.module:Name": see "your own models" below).

A model is built by a plain function `builder(in_channels, num_classes, image_size, *, options...)`;
its keyword options and their defaults are the model's tunable knobs (see `model_options`), and the
defaults reproduce the write-up. Every model returns raw logits [B, num_classes]: the write-ups'
log_softmax + NLL equals the cross_entropy the trainable uses.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from torch import nn

from hpo.errors import HpoError

TORCHVISION = "torchvision:"

# --------------------------------------------------------------------------- helpers


def _seq(**layers: nn.Module) -> nn.Sequential:
    """nn.Sequential with named layers (conv1, fc1...), so state dicts and feature-map hooks read well."""
    return nn.Sequential(OrderedDict(layers))


def _choice(option: str, value, allowed) -> object:
    if value not in allowed:
        raise HpoError(f"{option}={value!r} is not allowed: use one of {', '.join(map(repr, allowed))}.")
    return value


def _whole_count(option: str, value) -> int:
    """A model option counted in whole units (feature maps): unlike a space key's integer check (hpo.study),
    2.0 or a numpy int passes, as searchers hand those over."""
    try:
        ok = int(value) == value and int(value) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise HpoError(f"{option}={value!r} is not allowed: use a positive whole number.")
    return int(value)


def _probability(option: str, value) -> float:
    try:
        ok = 0.0 <= float(value) < 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise HpoError(f"{option}={value!r} is not allowed: use a probability in [0, 1).")
    return float(value)


def _too_small(image_size: int, minimum: int, resize: str) -> HpoError:
    # build_model prefixes the model's name.
    return HpoError(f"needs images of at least {minimum}x{minimum} pixels but gets {image_size}x{image_size}: "
                    f"set `resize` in the study's space, e.g. {resize}.")


def _conv(s: int, k: int, pad: int = 0, stride: int = 1) -> int:
    return (s + 2 * pad - k) // stride + 1


ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
POOLINGS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}

# --------------------------------------------------------------------------- write-up 002: MNIST FC vs CNN


def fc2(in_channels, num_classes, image_size, *, feature_maps=8):
    """Write-up 002's FC2Layer: flatten -> n_hidden -> n_hidden -> classes with ReLU.

    feature_maps = n_hidden (8: 784->8->8->10, 6,442 parameters, about the same as mnist_cnn's 6,422).
    """
    n = _whole_count("feature_maps", feature_maps)
    return _seq(
        flatten=nn.Flatten(),
        fc1=nn.Linear(in_channels * image_size * image_size, n), relu1=nn.ReLU(),
        fc2=nn.Linear(n, n), relu2=nn.ReLU(),
        fc3=nn.Linear(n, num_classes),
    )


def mnist_cnn(in_channels, num_classes, image_size, *, feature_maps=6):
    """Write-up 002's CNN: conv5 relu maxpool2, conv5 relu maxpool2, fc 50 relu, fc classes.

    feature_maps = n_feature, the width of both convs (6: 6,422 parameters on MNIST).
    """
    n = _whole_count("feature_maps", feature_maps)
    s = (_conv(image_size, 5) // 2 - 4) // 2
    if s < 1:
        raise _too_small(image_size, 16, '"resize": 28')
    return _seq(
        conv1=nn.Conv2d(in_channels, n, 5), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(n, n, 5), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
        fc1=nn.Linear(n * s * s, 50), relu3=nn.ReLU(),
        fc2=nn.Linear(50, num_classes),
    )


def cifar_cnn(in_channels, num_classes, image_size, *, feature_maps=6):
    """Write-up 002's CIFAR-10 LeNet-like net: conv5 6, pool, conv5 16, pool, fc 120, 84, classes (ReLU, max pool).

    feature_maps = width of the first conv (6); the second scales with it (round(feature_maps*16/6), 16).
    """
    n1 = _whole_count("feature_maps", feature_maps)
    n2 = max(1, round(n1 * 16 / 6))
    s = (_conv(image_size, 5) // 2 - 4) // 2
    if s < 1:
        raise _too_small(image_size, 16, '"resize": 32')
    return _seq(
        conv1=nn.Conv2d(in_channels, n1, 5), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(n1, n2, 5), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
        fc1=nn.Linear(n2 * s * s, 120), relu3=nn.ReLU(),
        fc2=nn.Linear(120, 84), relu4=nn.ReLU(),
        fc3=nn.Linear(84, num_classes),
    )


# --------------------------------------------------------------------------- write-up 003: the PyTorch MNIST example


def mnist_net(in_channels, num_classes, image_size, *, feature_maps=10, dropout=0.5):
    """Write-up 003's net (pytorch/examples mnist, 2017): conv5 maxpool relu, conv5 dropout2d maxpool relu,
    fc 50 relu dropout, fc classes.

    feature_maps = width of the first conv (10; the second is twice that). dropout is both the Dropout2d
    and the fc dropout probability (0.5 in the example).
    """
    n = _whole_count("feature_maps", feature_maps)
    p = _probability("dropout", dropout)
    s = (_conv(image_size, 5) // 2 - 4) // 2
    if s < 1:
        raise _too_small(image_size, 16, '"resize": 28')
    return _seq(
        conv1=nn.Conv2d(in_channels, n, 5), pool1=nn.MaxPool2d(2), relu1=nn.ReLU(),
        conv2=nn.Conv2d(n, 2 * n, 5), conv2_drop=nn.Dropout2d(p), pool2=nn.MaxPool2d(2), relu2=nn.ReLU(),
        flatten=nn.Flatten(),
        fc1=nn.Linear(2 * n * s * s, 50), relu3=nn.ReLU(), drop=nn.Dropout(p),
        fc2=nn.Linear(50, num_classes),
    )


# --------------------------------------------------------------------------- write-up 001: LeNet-5


def lenet5(in_channels, num_classes, image_size, *, activation="relu", pooling="max", dropout=0.0,
           feature_maps=6, init="default"):
    """Write-up 001's LeNet-5: conv5 pad 2, act, pool, conv5, act, pool, fc 120, act, [dropout], fc 84, act,
    [dropout], fc classes.

    The write-up's models 1-2 are the defaults; model 3 is dropout=0.5; the d2l variant is
    activation="sigmoid", pooling="avg", init="xavier". feature_maps = width of the first conv (6);
    the second scales with it (round(feature_maps*16/6), 16).
    """
    act = ACTIVATIONS[_choice("activation", activation, list(ACTIVATIONS))]
    pool = POOLINGS[_choice("pooling", pooling, list(POOLINGS))]
    _choice("init", init, ["default", "xavier"])
    p = _probability("dropout", dropout)
    n1 = _whole_count("feature_maps", feature_maps)
    n2 = max(1, round(n1 * 16 / 6))
    s = (image_size // 2 - 4) // 2  # conv1 keeps the size (pad 2): 28 -> 14 -> 10 -> 5; 32 -> 16 -> 12 -> 6
    if s < 1:
        raise _too_small(image_size, 12, '"resize": 28')
    net = _seq(
        conv1=nn.Conv2d(in_channels, n1, 5, padding=2), act1=act(), pool1=pool(2),
        conv2=nn.Conv2d(n1, n2, 5), act2=act(), pool2=pool(2),
        flatten=nn.Flatten(),
        fc1=nn.Linear(n2 * s * s, 120), act3=act(), drop1=nn.Dropout(p),
        fc2=nn.Linear(120, 84), act4=act(), drop2=nn.Dropout(p),
        fc3=nn.Linear(84, num_classes),
    )
    if init == "xavier":  # d2l's train_ch6: xavier_uniform_ on every conv/linear weight, biases as PyTorch leaves them
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
    return net


# --------------------------------------------------------------------------- write-up 000: conv vs pool downsampling


def downsample_net(in_channels, num_classes, image_size, *, downsample="conv", feature_size=7, feature_maps=16,
                   relu_logits=False):
    """Write-up 000's net: conv3 pad 1 + ReLU, downsampling to feature_size x feature_size, one linear layer.

    downsample="conv": 3x3 stride-2 convs (+ReLU), each doubling the channels (28 -> 14 -> 7); for
    feature_size=1 a last conv whose kernel is the remaining size (7x7) takes 7 -> 1, doubling again.
    downsample="pool": one max pooling to the same size; channels stay feature_maps (pooling has none).
    feature_size is one of image_size/2, image_size/4, 1 (14, 7, 1 on 28x28 inputs).
    feature_maps = width of the first conv (16). relu_logits=True applies the write-up's ReLU on the
    output logits (a bug that caps what the net can express; kept to reproduce its numbers).
    """
    _choice("downsample", downsample, ["conv", "pool"])
    n = _whole_count("feature_maps", feature_maps)
    if image_size % 4:
        raise HpoError(f"needs an image size divisible by 4, got {image_size}: set `resize` in the study's space, "
                       f"e.g. \"resize\": {image_size // 4 * 4 + 4}.")
    allowed = [image_size // 2, image_size // 4, 1]
    if feature_size not in allowed:
        raise HpoError(f"feature_size={feature_size!r} is not allowed for {image_size}x{image_size} images: "
                       f"use one of {', '.join(map(str, allowed))}.")
    fs = int(feature_size)  # a search space may hand over 7.0
    layers = OrderedDict(conv1=nn.Conv2d(in_channels, n, 3, padding=1), relu1=nn.ReLU())
    if downsample == "pool":
        layers["pool"] = nn.MaxPool2d(image_size // fs)  # one max over k x k equals repeated 2x2 maxes
    else:
        size, i = image_size, 1
        while size > max(fs, image_size // 4):
            i += 1
            layers[f"conv{i}"], layers[f"relu{i}"] = nn.Conv2d(n, 2 * n, 3, stride=2, padding=1), nn.ReLU()
            n, size = 2 * n, size // 2
        if fs == 1:
            i += 1
            layers[f"conv{i}"], layers[f"relu{i}"] = nn.Conv2d(n, 2 * n, size), nn.ReLU()
            n = 2 * n
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(n * fs * fs, num_classes)
    if relu_logits:
        layers["relu_out"] = nn.ReLU()
    return nn.Sequential(layers)


# --------------------------------------------------------------------------- seeds 002 and 004: VGG

VGG_CFGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def vgg(in_channels, num_classes, image_size, *, cfg="A", batch_norm=True, feature_maps=64, dropout=0.5,
        classifier_width=4096):
    """VGG-11/13/16/19 (cfg A/B/D/E) from write-ups 002 (CIFAR-10) and 004 (Fashion-MNIST at 224x224).

    Below 224 pixels (002) the final (image_size/32)^2 maps are flattened into one Linear to the classes
    (Linear(512, 10) on 32x32). From 224 up (004, torchvision style) an adaptive average pool to 7x7 feeds
    512*7*7 -> classifier_width -> classifier_width -> classes with ReLU and Dropout(dropout) after the
    hidden layers; dropout only applies there. Write-up 004 exactly: batch_norm=False, dropout=0.0.
    feature_maps = width of the first block (64); the others scale with it (128, 256, 512 at 64).
    """
    layout = VGG_CFGS[_choice("cfg", cfg, list(VGG_CFGS))]
    _choice("batch_norm", batch_norm, [True, False])
    w = _whole_count("feature_maps", feature_maps)
    p = _probability("dropout", dropout)
    hidden = _whole_count("classifier_width", classifier_width)
    if image_size < 32:  # five 2x2 max pools: the final map would vanish
        raise _too_small(image_size, 32, '"resize": 32 (or 224 for write-up 004\'s 4096-wide classifier)')
    layers, c = [], in_channels
    for v in layout:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        out = max(1, round(v * w / 64))
        layers += [nn.Conv2d(c, out, 3, padding=1)] + ([nn.BatchNorm2d(out)] if batch_norm else []) + [nn.ReLU()]
        c = out
    if image_size >= 224:
        head = [nn.AdaptiveAvgPool2d(7), nn.Flatten(),
                nn.Linear(c * 7 * 7, hidden), nn.ReLU(), nn.Dropout(p),
                nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(p),
                nn.Linear(hidden, num_classes)]
    else:
        s = image_size // 32
        head = [nn.Flatten(), nn.Linear(c * s * s, num_classes)]
    return _seq(features=nn.Sequential(*layers), classifier=nn.Sequential(*head))


# --------------------------------------------------------------------------- registry

MODELS: dict[str, Callable[..., nn.Module]] = {
    "fc2": fc2,
    "mnist_cnn": mnist_cnn,
    "mnist_net": mnist_net,
    "lenet5": lenet5,
    "downsample_net": downsample_net,
    "cifar_cnn": cifar_cnn,
    "vgg": vgg,
}


def _torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)  # classification models only


# --------------------------------------------------------------------------- your own models
#
# A study's model (or a `model` space value) may also be a callable, a class or a factory,
# `MyNet(in_channels, num_classes, image_size, *, option=default, ...)` returning an nn.Module that
# gives logits, or the import path of one, "package.module:Name". A callable that can be imported by
# name becomes that import path (a string, like the built-in names); one that cannot (a class defined in
# the study file, which runpy runs as a module that cannot be imported) becomes a ModelRef, which carries
# it by value to Ray's workers and into every checkpoint (cloudpickle), and reads as "studies/x.py:MyNet".

INPUTS = ("in_channels", "num_classes", "image_size")
SIGNATURE = "NAME(in_channels, num_classes, image_size, *, option=default, ...)"


def _cloudpickle():
    from ray import cloudpickle  # Ray's own copy: the version Ray pickles trials with

    return cloudpickle


class ModelRef:
    """A model callable that cannot be imported by name, with a readable, stable label
    ("studies/x.py:MyNet": no memory address, so study.json and --resume compare it as text). It pickles
    the callable by value (cloudpickle), so it reaches Ray's workers and checkpoints load it back."""

    __slots__ = ("fn", "label", "_pickled")

    def __init__(self, fn: Callable[..., nn.Module], label: str):
        self.fn, self.label, self._pickled = fn, label, None

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __str__(self) -> str:
        return self.label

    __repr__ = __str__

    def __eq__(self, other) -> bool:
        return isinstance(other, ModelRef) and other.label == self.label

    def __hash__(self) -> int:
        return hash(("ModelRef", self.label))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self  # immutable: Ray's configs and dataclasses.asdict copy it every epoch

    def __reduce__(self):
        if self._pickled is None:
            self._pickled = _cloudpickle().dumps(self.fn)
        return _unpickle_model_ref, (self.label, self._pickled)


def _unpickle_model_ref(label: str, data: bytes) -> ModelRef:
    return ModelRef(_cloudpickle().loads(data), label)


def _source_file(fn) -> str | None:
    """The file a function or class was defined in (a class: the file of one of its methods, else the
    module-level frame that holds it, i.e. the study file being run)."""
    code = getattr(fn, "__code__", None)
    if code is None and isinstance(fn, type):
        for attr in vars(fn).values():
            code = getattr(getattr(attr, "__func__", attr), "__code__", None)
            if code is not None:
                break
    if code is not None:
        return code.co_filename
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get(getattr(fn, "__name__", None)) is fn:
            return frame.f_code.co_filename
        frame = frame.f_back
    return None


def _import_path(fn) -> str | None:
    """"module:qualname" when importing it gives this very object (so any process can)."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    # runpy runs a study file as the module "<run_path>", which no other process can import
    if not module or not qualname or "<" in module + qualname or module == "__main__" or module not in sys.modules:
        return None
    obj = sys.modules[module]
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return f"{module}:{qualname}" if obj is fn else None


def as_model(value):
    """What a study's model= (or a `model` space value) is run as: names and import paths stay strings;
    a built-in builder becomes its name; a callable importable by name its "module:Name" path; any other
    callable a ModelRef labelled "<its file, relative to the working directory>:<its name>"."""
    if isinstance(value, (str, ModelRef)) or not callable(value):
        return value
    for name, builder in MODELS.items():
        if builder is value:
            return name
    path = _import_path(value)
    if path:
        return path
    qualname = getattr(value, "__qualname__", None) or type(value).__name__
    file = _source_file(value)
    if file and os.path.isabs(file):
        try:
            file = str(Path(file).relative_to(Path.cwd()))
        except ValueError:
            pass
    file = os.path.normpath(file) if file else getattr(value, "__module__", "?")
    line = getattr(getattr(value, "__code__", None), "co_firstlineno", None)
    if "<" in qualname and line:  # a lambda or a nested function: its line tells two apart
        qualname += f"@{line}"
    return ModelRef(value, f"{file}:{qualname}")


def _label(name) -> str:
    return str(as_model(name))


def _is_import_path(name: str) -> bool:
    return ":" in name and not name.startswith(TORCHVISION)


def _import(path: str):
    """The callable an import path "package.module:Name" names, or an HpoError saying why not."""
    module, _, qualname = path.partition(":")
    if not all(p.isidentifier() for p in module.split(".")) or not all(p.isidentifier() for p in qualname.split(".")):
        raise HpoError(f"model {path!r} is not an import path: write \"package.module:Name\" (for a class in a "
                       "file, define or import it in the study file and pass the class itself: model=MyNet).")
    try:
        obj = importlib.import_module(module)
    except Exception as e:
        raise HpoError(f"model {path!r}: module {module!r} does not import ({type(e).__name__}: "
                       f"{' '.join(str(e).split())}). It must be importable where the study runs: from the project "
                       "folder, or on $PYTHONPATH.") from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n, v in vars(sys.modules[module]).items() if callable(v) and not n.startswith("_"))
            raise HpoError(f"model {path!r}: module {module!r} has no {qualname!r}. It has: "
                           f"{', '.join(names) or 'nothing callable'}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise HpoError(f"model {path!r} is a {type(obj).__name__}, not a class or function that builds a model.")
    return obj


def _callable(name):
    """The user's callable behind a model value (an import path, a ModelRef or a callable), else None."""
    if isinstance(name, ModelRef):
        return name.fn
    if isinstance(name, str):
        return _import(name) if _is_import_path(name) else None
    return name if callable(name) else None


def _signature_options(fn, label: str) -> dict[str, object]:
    """The options (keyword parameters with defaults, besides the three inputs) of a model callable; an
    HpoError when it cannot be called as SIGNATURE."""
    def fail(problem):
        signature = SIGNATURE.replace("NAME", label.rpartition(":")[2])
        return HpoError(f"model {label!r} cannot be a model: it must be callable as {signature} "
                        f"and return a torch.nn.Module that gives logits [batch, num_classes]; {problem}.")

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError) as e:
        raise fail(f"its signature cannot be read ({e})") from None
    kinds = inspect.Parameter
    var_keyword = any(p.kind is kinds.VAR_KEYWORD for p in params.values())
    missing = [n for n in INPUTS if (n not in params and not var_keyword)
               or (n in params and params[n].kind in (kinds.POSITIONAL_ONLY, kinds.VAR_POSITIONAL))]
    if missing:
        raise fail(f"it takes no {' or '.join(missing)} (it takes: {', '.join(params) or 'nothing'})")
    required = [n for n, p in params.items() if n not in INPUTS and p.default is p.empty
                and p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)]
    if required:
        raise fail(f"{', '.join(required)} {'has' if len(required) == 1 else 'have'} no default (every option "
                   "needs one: the space sets options, the defaults fill the rest)")
    return {n: p.default for n, p in params.items() if n not in INPUTS
            and p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)}


def check_model_name(name) -> None:
    """HpoError for a model that is neither in MODELS, "torchvision:NAME" of a torchvision classifier, an
    import path "package.module:Name" nor a callable, or whose callable has the wrong signature."""
    fn = _callable(name)
    if fn is not None:
        _signature_options(fn, _label(name))
        return
    if not isinstance(name, str):
        raise HpoError(f"model={name!r} is not a model: use one of {', '.join(MODELS)}, \"torchvision:NAME\", "
                       f"\"package.module:Name\" or a class or function {SIGNATURE}.")
    if name.startswith(TORCHVISION):
        tv = name[len(TORCHVISION):]
        names = _torchvision_names()
        if tv not in names:
            close = difflib.get_close_matches(tv, names, n=3)
            hint = f" Did you mean {' or '.join(repr(TORCHVISION + c) for c in close)}?" if close else ""
            raise HpoError(f"model {name!r}: torchvision has no classification model {tv!r}.{hint} "
                           f"Its models are listed by torchvision.models.list_models(module=torchvision.models).")
        return
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise HpoError(f"unknown model {name!r}.{hint} Models: {', '.join(MODELS)}, "
                       f"or \"torchvision:NAME\" for a torchvision classifier (e.g. \"torchvision:resnet18\"), "
                       f"\"package.module:Name\" or a class or function of your own (docs/study-file.md).")


def model_options(name) -> dict[str, object]:
    """The keyword options a model accepts, with their defaults ({} for torchvision models)."""
    check_model_name(name)
    fn = _callable(name)
    if fn is not None:
        return _signature_options(fn, _label(name))
    if name.startswith(TORCHVISION):
        return {}
    params = inspect.signature(MODELS[name]).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_model(name, *, in_channels: int, num_classes: int, image_size: int, **options) -> nn.Module:
    """Build model `name` (a name, an import path, a ModelRef or a callable) for in_channels x image_size x
    image_size inputs; returns logits [B, num_classes]."""
    known = model_options(name)
    unknown = sorted(set(options) - set(known))
    label = _label(name)
    if unknown:
        listed = ", ".join(f"{k}={v!r}" for k, v in known.items()) or "none"
        raise HpoError(f"model {label!r} has no option {', '.join(map(repr, unknown))}: its options are {listed}.")
    fn = _callable(name)
    if fn is not None:
        try:
            model = fn(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **options)
        except HpoError as e:
            raise HpoError(f"model {label!r}: {e}") from None
        if not isinstance(model, nn.Module):
            raise HpoError(f"model {label!r} returned a {type(model).__name__}, not a torch.nn.Module: it must "
                           f"build and return the network (as {SIGNATURE.replace('NAME', label.rpartition(':')[2])}).")
        return model
    if name.startswith(TORCHVISION):
        return _torchvision(name[len(TORCHVISION):], in_channels, num_classes, image_size)
    try:
        return MODELS[name](in_channels, num_classes, image_size, **options)
    except HpoError as e:
        raise HpoError(f"model {name!r}: {e}") from None


def trial_model(keys: dict, options: dict, study_model, info) -> tuple[nn.Module, str, int]:
    """(model, its name, its image size) of a trial config split by hpo.study.trial_options: the config's
    `model`, else the study's, for the dataset's channels and classes (`info`: hpo.formats.DatasetInfo), at
    the config's `resize`, else the dataset's size. The one config -> model rule of the trainable, the
    --smoke caps and the checkpoint loader."""
    name, size = keys["model"] or study_model, keys["resize"] or info.size
    return build_model(name, in_channels=info.channels, num_classes=info.num_classes, image_size=size,
                       **options), name, size


def check_build(name, *, in_channels: int, num_classes: int, image_size: int, **options) -> None:
    """Build a model variant on PyTorch's meta device (no memory, no compute), as a study is checked
    before Ray starts. A model of your own must also take a batch of such images and give logits
    [batch, num_classes]: one forward pass on the meta device (or, where the model uses an operation the
    meta device lacks, on two real images on the CPU); its errors become an HpoError naming it."""
    import torch

    label = _label(name)
    given = ", ".join(f"{k}={v!r}" for k, v in options.items())
    where = f"{label!r} ({given})" if given else repr(label)
    with torch.device("meta"):
        if _callable(name) is None:
            build_model(name, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **options)
            return
        try:
            model = build_model(name, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                                **options)
        except HpoError:
            raise
        except Exception as e:
            raise HpoError(f"model {where} raised {type(e).__name__}: {' '.join(str(e).split())}") from None
    shape = (2, in_channels, image_size, image_size)
    try:
        with torch.no_grad():
            out = model.eval()(torch.empty(shape, device="meta"))
    except Exception:  # an operation without a meta kernel, or a real error: see on the CPU
        try:
            model = build_model(name, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                                **options)
            with torch.no_grad():
                out = model.eval()(torch.zeros(shape))
        except Exception as e:
            raise HpoError(f"model {where} fails on a batch of {shape[0]} images of {in_channels}x{image_size}x"
                           f"{image_size} ({type(e).__name__}: {' '.join(str(e).split())}): make it fit the "
                           "dataset's images, or set `resize` in the study's space.") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (shape[0], num_classes):
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise HpoError(f"model {where} gives {got} for a batch of {shape[0]} images of {in_channels}x{image_size}x"
                       f"{image_size}; it must give logits [{shape[0]}, {num_classes}] (one per class).")


def _torchvision(tv: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    import torch
    import torchvision

    kwargs = {"aux_logits": False} if tv in ("googlenet", "inception_v3") else {}  # logits only, no aux tuples
    if tv.startswith("vit_"):
        kwargs["image_size"] = image_size  # ViT's position embedding is sized for one input size
    try:
        model = torchvision.models.get_model(tv, weights=None, num_classes=num_classes, **kwargs)
        # The first conv is built for RGB: replace it by one of the same shape reading in_channels.
        path, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), ("", None))
        if conv is not None and conv.in_channels != in_channels:
            parent, _, attr = path.rpartition(".")
            setattr(model.get_submodule(parent), attr, nn.Conv2d(
                in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode))
        # One tiny forward turns a shape error deep inside (input too small) into advice.
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size))
    except (RuntimeError, AssertionError, ValueError) as e:
        raise HpoError(f"model 'torchvision:{tv}' cannot take {image_size}x{image_size} images ({e}): "
                       f"set `resize` in the study's space, e.g. \"resize\": 224.") from None
    return model.train()


def count_params(model: nn.Module) -> int:
    """Number of parameters (as write-up 002's get_n_params counts them)."""
    return sum(p.numel() for p in model.parameters())
