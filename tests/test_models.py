"""hpo.models: shapes, parameter counts against hand arithmetic, errors, options, gradients."""

import pytest
import torch
import torchvision
from torch import nn

from hpo.errors import HpoError
from hpo.models import MODELS, build_model, check_model_name, count_params, model_options

MNIST, CIFAR = (1, 28), (3, 32)


def build(name, shape=MNIST, classes=10, **options):
    c, s = shape
    return build_model(name, in_channels=c, num_classes=classes, image_size=s, **options)


def logits(model, shape, batch=2):
    c, s = shape
    return model(torch.randn(batch, c, s, s))


# Every registered model, on every input it supports (with the options that input needs).
CASES = [
    ("fc2", MNIST, {}), ("fc2", CIFAR, {}),
    ("mnist_cnn", MNIST, {}), ("mnist_cnn", CIFAR, {}),
    ("mnist_net", MNIST, {}), ("mnist_net", CIFAR, {}),
    ("lenet5", MNIST, {}), ("lenet5", CIFAR, {}),
    ("lenet5", MNIST, {"activation": "sigmoid", "pooling": "avg", "init": "xavier", "dropout": 0.5}),
    ("cifar_cnn", CIFAR, {}), ("cifar_cnn", MNIST, {}),
    ("vgg", CIFAR, {}), ("vgg", MNIST[:1] + (32,), {"cfg": "E", "batch_norm": False, "feature_maps": 8}),
    ("vgg", (1, 224), {"feature_maps": 8, "classifier_width": 64}),
    ("vgg", (3, 64), {"feature_maps": 8}),
    *[("downsample_net", MNIST, {"downsample": d, "feature_size": f}) for d in ("conv", "pool") for f in (14, 7, 1)],
    *[("downsample_net", CIFAR, {"downsample": d, "feature_size": f}) for d in ("conv", "pool") for f in (16, 8, 1)],
    ("torchvision:resnet18", MNIST, {}), ("torchvision:resnet18", CIFAR, {}),
]


@pytest.mark.parametrize("name,shape,options", CASES, ids=lambda v: str(v))
def test_output_is_logits_batch_by_classes(name, shape, options):
    torch.manual_seed(0)
    model = build(name, shape, **options)
    out = logits(model, shape, batch=1 if shape[1] >= 224 else 3)
    assert out.shape == (1 if shape[1] >= 224 else 3, 10)
    assert torch.isfinite(out).all()


def test_every_registered_model_is_covered():
    assert {name for name, _, _ in CASES} >= set(MODELS)


def test_num_classes_is_respected():
    options = {"vgg": {"feature_maps": 8}, "downsample_net": {"feature_size": 8}}
    for name in MODELS:
        assert logits(build(name, CIFAR, 7, **options.get(name, {})), CIFAR).shape == (2, 7)


# Parameter counts on each write-up's dataset, as arithmetic (weights + biases per layer).
PARAM_COUNTS = [
    ("fc2", MNIST, {}, (784 * 8 + 8) + (8 * 8 + 8) + (8 * 10 + 10)),  # 6,442 (write-up 002 prints it)
    ("mnist_cnn", MNIST, {}, (1 * 6 * 25 + 6) + (6 * 6 * 25 + 6) + (6 * 4 * 4 * 50 + 50) + (50 * 10 + 10)),  # 6,422
    ("mnist_net", MNIST, {}, (1 * 10 * 25 + 10) + (10 * 20 * 25 + 20) + (320 * 50 + 50) + (50 * 10 + 10)),  # 21,840
    ("lenet5", MNIST, {},
     (1 * 6 * 25 + 6) + (6 * 16 * 25 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)),  # 61,706
    ("lenet5", CIFAR, {},  # 32x32 with pad 2: 32 -> 16 -> 12 -> 6
     (3 * 6 * 25 + 6) + (6 * 16 * 25 + 16) + (16 * 6 * 6 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)),
    ("lenet5", MNIST, {"feature_maps": 12},  # second conv scales: 12 * 16 / 6 = 32
     (1 * 12 * 25 + 12) + (12 * 32 * 25 + 32) + (32 * 25 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)),
    ("cifar_cnn", CIFAR, {},
     (3 * 6 * 25 + 6) + (6 * 16 * 25 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)),  # 62,006
    ("downsample_net", MNIST, {"downsample": "conv", "feature_size": 14},
     (1 * 16 * 9 + 16) + (16 * 32 * 9 + 32) + (32 * 14 * 14 * 10 + 10)),  # the write-up's code: 67,530
    ("downsample_net", MNIST, {"downsample": "conv", "feature_size": 7},
     (1 * 16 * 9 + 16) + (16 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 7 * 7 * 10 + 10)),
    ("downsample_net", MNIST, {"downsample": "conv", "feature_size": 1},  # last conv: kernel 7, 64 -> 128
     (1 * 16 * 9 + 16) + (16 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 128 * 49 + 128) + (128 * 10 + 10)),
    ("downsample_net", MNIST, {"downsample": "pool", "feature_size": 14}, (1 * 16 * 9 + 16) + (16 * 14 * 14 * 10 + 10)),
    ("downsample_net", MNIST, {"downsample": "pool", "feature_size": 7}, (1 * 16 * 9 + 16) + (16 * 7 * 7 * 10 + 10)),
    ("downsample_net", MNIST, {"downsample": "pool", "feature_size": 1}, (1 * 16 * 9 + 16) + (16 * 10 + 10)),
    ("downsample_net", MNIST, {"relu_logits": True}, (1 * 16 * 9 + 16) + (16 * 32 * 9 + 32) + (32 * 64 * 9 + 64)
     + (64 * 7 * 7 * 10 + 10)),  # ReLU has no parameters
    ("vgg", CIFAR, {},  # write-up 002: cfg A + BatchNorm (weight and bias per channel), Linear(512, 10)
     (3 * 64 * 9 + 64 + 2 * 64) + (64 * 128 * 9 + 128 + 2 * 128) + (128 * 256 * 9 + 256 + 2 * 256)
     + (256 * 256 * 9 + 256 + 2 * 256) + (256 * 512 * 9 + 512 + 2 * 512) + 3 * (512 * 512 * 9 + 512 + 2 * 512)
     + (512 * 10 + 10)),
    ("vgg", CIFAR, {"feature_maps": 8},  # widths 8, 16, 32, 32, 64, 64, 64, 64
     (3 * 8 * 9 + 8 + 2 * 8) + (8 * 16 * 9 + 16 + 2 * 16) + (16 * 32 * 9 + 32 + 2 * 32)
     + (32 * 32 * 9 + 32 + 2 * 32) + (32 * 64 * 9 + 64 + 2 * 64) + 3 * (64 * 64 * 9 + 64 + 2 * 64) + (64 * 10 + 10)),
]


@pytest.mark.parametrize("name,shape,options,expected", PARAM_COUNTS, ids=lambda v: str(v))
def test_parameter_count_matches_hand_arithmetic(name, shape, options, expected):
    assert count_params(build(name, shape, **options)) == expected


def test_vgg11_at_224_matches_write_up_004_and_torchvision():
    with torch.device("meta"):  # counts without allocating 130M parameters
        seed004 = build("vgg", (1, 224), batch_norm=False, dropout=0.0)
        assert count_params(seed004) == (
            (1 * 64 * 9 + 64) + (64 * 128 * 9 + 128) + (128 * 256 * 9 + 256) + (256 * 256 * 9 + 256)
            + (256 * 512 * 9 + 512) + 3 * (512 * 512 * 9 + 512)
            + (512 * 7 * 7 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 10 + 10))  # 128,806,154
        for cfg, tv in [("A", "vgg11"), ("B", "vgg13"), ("D", "vgg16"), ("E", "vgg19")]:
            for bn in (False, True):
                ours = build("vgg", (3, 224), 1000, cfg=cfg, batch_norm=bn)
                theirs = torchvision.models.get_model(tv + "_bn" * bn, weights=None)
                assert count_params(ours) == count_params(theirs), (cfg, bn)


def test_fc2_and_mnist_cnn_have_about_the_same_size():
    # The point of write-up 002's comparison.
    fc, cnn = count_params(build("fc2")), count_params(build("mnist_cnn"))
    assert abs(fc - cnn) / fc < 0.01


def test_torchvision_first_conv_takes_the_dataset_channels():
    model = build("torchvision:resnet18", MNIST)
    assert model.conv1.in_channels == 1 and model.conv1.out_channels == 64
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2) and model.conv1.padding == (3, 3)
    assert model.fc.out_features == 10
    assert model.training  # handed back ready to train after the size check


# --------------------------------------------------------------------------- errors


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(HpoError, match=r"unknown model 'lenet'.*Did you mean 'lenet5'.*mnist_net.*vgg"):
        check_model_name("lenet")
    with pytest.raises(HpoError, match="Did you mean 'torchvision:resnet18'"):
        check_model_name("torchvision:resnet19")
    with pytest.raises(HpoError, match="unknown model"):
        build_model("vgg16", in_channels=3, num_classes=10, image_size=32)
    check_model_name("torchvision:resnet18")
    with pytest.raises(HpoError):  # detection models are not classifiers
        check_model_name("torchvision:fasterrcnn_resnet50_fpn")


def test_unknown_option_lists_the_model_options():
    with pytest.raises(HpoError, match=r"'lenet5' has no option 'downsample'.*activation='relu'.*feature_maps=6"):
        build("lenet5", downsample="conv")
    with pytest.raises(HpoError, match=r"'fc2' has no option 'dropout'.*feature_maps=8"):
        build("fc2", dropout=0.5)
    with pytest.raises(HpoError, match=r"no option 'dropout'.*none"):
        build("torchvision:resnet18", dropout=0.5)


@pytest.mark.parametrize("name,options,match", [
    ("downsample_net", {"downsample": "stride"}, r"downsample='stride'.*'conv', 'pool'"),
    ("downsample_net", {"feature_size": 4}, r"feature_size=4.*28x28.*14, 7, 1"),
    ("lenet5", {"activation": "gelu"}, r"activation='gelu'.*'relu', 'sigmoid', 'tanh'"),
    ("lenet5", {"pooling": "min"}, r"pooling='min'.*'max', 'avg'"),
    ("lenet5", {"init": "he"}, r"init='he'.*'default', 'xavier'"),
    ("lenet5", {"dropout": 1.5}, r"dropout=1.5.*\[0, 1\)"),
    ("mnist_cnn", {"feature_maps": 2.5}, r"feature_maps=2.5.*positive whole number"),
    ("vgg", {"cfg": "C"}, r"cfg='C'.*'A', 'B', 'D', 'E'"),
])
def test_bad_option_value_lists_allowed_values(name, options, match):
    shape = CIFAR if name == "vgg" else MNIST
    with pytest.raises(HpoError, match=f"model '{name}': {match}"):
        build(name, shape, **options)


def test_whole_float_widths_from_a_search_space_are_accepted():
    assert count_params(build("fc2", feature_maps=8.0)) == 6442


def test_downsample_net_on_cifar_names_the_sizes_it_allows():
    with pytest.raises(HpoError, match=r"feature_size=7 .*32x32.*16, 8, 1"):
        build("downsample_net", CIFAR, feature_size=7)


def test_too_small_inputs_say_to_set_resize():
    with pytest.raises(HpoError, match=r"'vgg'.*28x28.*set `resize`.*\"resize\": 32"):
        build("vgg", MNIST)
    with pytest.raises(HpoError, match=r"'lenet5'.*8x8.*set `resize`"):
        build("lenet5", (1, 8))
    with pytest.raises(HpoError, match=r"'torchvision:vit_b_16'.*28x28.*set `resize`"):
        build("torchvision:vit_b_16", MNIST)


# --------------------------------------------------------------------------- options


def test_model_options_are_the_builders_keywords_with_defaults():
    assert model_options("fc2") == {"feature_maps": 8}
    assert model_options("mnist_cnn") == {"feature_maps": 6}
    assert model_options("cifar_cnn") == {"feature_maps": 6}
    assert model_options("mnist_net") == {"feature_maps": 10, "dropout": 0.5}
    assert model_options("lenet5") == {"activation": "relu", "pooling": "max", "dropout": 0.0, "feature_maps": 6,
                                       "init": "default"}
    assert model_options("downsample_net") == {"downsample": "conv", "feature_size": 7, "feature_maps": 16,
                                               "relu_logits": False}
    assert model_options("vgg") == {"cfg": "A", "batch_norm": True, "feature_maps": 64, "dropout": 0.5,
                                    "classifier_width": 4096}
    assert model_options("torchvision:resnet18") == {}
    with pytest.raises(HpoError, match="unknown model"):
        model_options("nope")


def test_options_change_the_network():
    net = build("lenet5", activation="tanh", pooling="avg", dropout=0.3)
    kinds = [type(m) for m in net]
    assert nn.Tanh in kinds and nn.AvgPool2d in kinds and nn.ReLU not in kinds and nn.MaxPool2d not in kinds
    assert [m.p for m in net if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    dropouts = [m.p for m in build("mnist_net", dropout=0.2) if isinstance(m, (nn.Dropout, nn.Dropout2d))]
    assert dropouts == [0.2, 0.2]
    assert isinstance(build("downsample_net", relu_logits=True)[-1], nn.ReLU)
    assert isinstance(build("downsample_net")[-1], nn.Linear)


def test_relu_logits_reproduces_the_write_up_bug():
    torch.manual_seed(0)
    out = logits(build("downsample_net", relu_logits=True), MNIST, batch=8)
    assert (out >= 0).all() and (out == 0).any()  # logits clipped at 0: the net cannot say "not this class"


# --------------------------------------------------------------------------- training


def test_lenet5_sgd_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = build("lenet5")
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(10):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses  # about 2.31 -> 2.20


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    shape = CIFAR if name in ("vgg", "cifar_cnn") else MNIST
    model = build(name, shape, **({"feature_maps": 8} if name == "vgg" else {}))
    nn.functional.cross_entropy(logits(model, shape, batch=4), torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
