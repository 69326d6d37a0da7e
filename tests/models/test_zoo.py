"""Model zoo: every builder runs, and parameter counts match BENCHMARKS.md and the papers."""

from __future__ import annotations

import pytest
import torch

import lightning_kd.models as zoo


def n_params(m):
    return sum(p.numel() for p in m.parameters())


CIFAR_BUILDERS = ["resnet8", "resnet14", "resnet20", "resnet32", "resnet8x4", "resnet32x4", "wrn_16_2", "wrn_40_2"]


@pytest.mark.parametrize("name", CIFAR_BUILDERS)
def test_cifar_builders_forward(name):
    model = getattr(zoo, name)(num_classes=100)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    model = getattr(zoo, name)(num_classes=10, in_channels=1)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        # BENCHMARKS.md: teacher 2,776,522 and student 24,058 on 1x28x28, 10 classes
        (lambda: zoo.ResNet(14, (64, 64, 128, 256), in_channels=1, num_classes=10), 2_776_522),
        (lambda: zoo.SmallCNN(1, 10), 24_058),
        # CRD (arXiv:1910.10699) Table 1, CIFAR-100: resnet32x4 7.43M, resnet8x4 1.23M, wrn-40-2 2.26M,
        # wrn-16-2 0.70M, resnet56 0.86M, resnet20 0.28M
        (lambda: zoo.resnet32x4(), 7_433_860),
        (lambda: zoo.resnet8x4(), 1_233_540),
        (lambda: zoo.wrn_40_2(), 2_255_156),
        (lambda: zoo.wrn_16_2(), 703_284),
        (lambda: zoo.resnet56(), 861_620),
        (lambda: zoo.resnet20(), 278_324),
    ],
)
def test_parameter_counts(build, expected):
    assert n_params(build()) == expected


def test_mlp_and_small_cnn_shapes():
    assert zoo.MLP(64, 10, (32, 16))(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert zoo.SmallCNN(3, 7, (4, 8, 16))(torch.randn(3, 3, 32, 32)).shape == (3, 7)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        zoo.ResNet(depth=10)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        zoo.WideResNet(depth=18)
    with pytest.raises(ValueError, match="exactly 3 widths"):
        zoo.SmallCNN(1, 10, (8, 16))


def test_torchvision_builder():
    m = zoo.torchvision_model("resnet18", num_classes=10)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    with pytest.raises(ValueError, match="unknown torchvision model 'resnet19'; closest"):
        zoo.torchvision_model("resnet19")


def test_timm_builder():
    pytest.importorskip("timm")
    m = zoo.timm_model("resnet18", num_classes=10, in_chans=1).eval()
    assert m(torch.randn(1, 1, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="unknown timm model"):
        zoo.timm_model("not_a_model_xyz")
