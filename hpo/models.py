"""Architecture registry: every network of the five write-ups, plus "torchvision:NAME".

A model is built by a plain function `builder(in_channels, num_classes, image_size, *, options...)`;
its keyword options and their defaults are the model's tunable knobs (see `model_options`), and the
defaults reproduce the write-up. Every model returns raw logits [B, num_classes]: the write-ups'
log_softmax + NLL equals the cross_entropy the trainable uses.
"""

from __future__ import annotations

import difflib
import inspect
from collections import OrderedDict
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


def _positive_int(option: str, value) -> int:
    # Search spaces may hand over floats (2.0) or numpy ints; accept any whole positive number.
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

# --------------------------------------------------------------------------- seed 002: MNIST FC vs CNN


def fc2(in_channels, num_classes, image_size, *, feature_maps=8):
    """Write-up 002's FC2Layer: flatten -> n_hidden -> n_hidden -> classes with ReLU.

    feature_maps = n_hidden (8: 784->8->8->10, 6,442 parameters, about the same as mnist_cnn's 6,422).
    """
    n = _positive_int("feature_maps", feature_maps)
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
    n = _positive_int("feature_maps", feature_maps)
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
    n1 = _positive_int("feature_maps", feature_maps)
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


# --------------------------------------------------------------------------- seed 003: the PyTorch MNIST example


def mnist_net(in_channels, num_classes, image_size, *, feature_maps=10, dropout=0.5):
    """Write-up 003's net (pytorch/examples mnist, 2017): conv5 maxpool relu, conv5 dropout2d maxpool relu,
    fc 50 relu dropout, fc classes.

    feature_maps = width of the first conv (10; the second is twice that). dropout is both the Dropout2d
    and the fc dropout probability (0.5 in the example).
    """
    n = _positive_int("feature_maps", feature_maps)
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


# --------------------------------------------------------------------------- seed 001: LeNet-5


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
    n1 = _positive_int("feature_maps", feature_maps)
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


# --------------------------------------------------------------------------- seed 000: conv vs pool downsampling


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
    n = _positive_int("feature_maps", feature_maps)
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
    w = _positive_int("feature_maps", feature_maps)
    p = _probability("dropout", dropout)
    hidden = _positive_int("classifier_width", classifier_width)
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


def check_model_name(name: str) -> None:
    """HpoError for a name that is neither in MODELS nor "torchvision:NAME" of a torchvision classifier."""
    if not isinstance(name, str):
        raise HpoError(f"model={name!r} is not a model name: use one of {', '.join(MODELS)} or \"torchvision:NAME\".")
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
                       f"or \"torchvision:NAME\" for a torchvision classifier (e.g. \"torchvision:resnet18\").")


def model_options(name: str) -> dict[str, object]:
    """The keyword options a model accepts, with their defaults ({} for torchvision models)."""
    check_model_name(name)
    if name.startswith(TORCHVISION):
        return {}
    params = inspect.signature(MODELS[name]).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_model(name: str, *, in_channels: int, num_classes: int, image_size: int, **options) -> nn.Module:
    """Build model `name` for in_channels x image_size x image_size inputs; returns logits [B, num_classes]."""
    known = model_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        listed = ", ".join(f"{k}={v!r}" for k, v in known.items()) or "none"
        raise HpoError(f"model {name!r} has no option {', '.join(map(repr, unknown))}: its options are {listed}.")
    if name.startswith(TORCHVISION):
        return _torchvision(name[len(TORCHVISION):], in_channels, num_classes, image_size)
    try:
        return MODELS[name](in_channels, num_classes, image_size, **options)
    except HpoError as e:
        raise HpoError(f"model {name!r}: {e}") from None


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
