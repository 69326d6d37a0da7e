"""FeatureCapture and resolve_module: what feature-distillation losses rely on."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from lightning_kd.core.features import FeatureCapture, resolve_module
from lightning_kd.models import ResNet, SmallCNN


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture
def resnet() -> ResNet:
    torch.manual_seed(0)
    return ResNet(8, num_classes=10).eval()


@pytest.fixture
def cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(1, 10).eval()


def test_nested_path_output_matches_manual_forward(resnet):
    x = torch.randn(2, 3, 32, 32)
    with FeatureCapture(resnet, ["layer1.0.conv1"]) as cap:
        resnet(x)
    stem = resnet.relu(resnet.bn1(resnet.conv1(x)))  # what layer1.0.conv1 receives
    expected = resnet.layer1[0].conv1(stem)
    torch.testing.assert_close(cap.features["layer1.0.conv1"], expected)


def test_block_output_and_input_match_manual_forward(cnn):
    x = torch.randn(2, 1, 28, 28)
    h1 = cnn.pool1(cnn.block1(x))
    with FeatureCapture(cnn, ["block2"]) as out, FeatureCapture(cnn, ["block2"], capture="input") as inp:
        cnn(x)
    torch.testing.assert_close(out.features["block2"], cnn.block2(h1))
    torch.testing.assert_close(inp.features["block2"], h1)


def test_empty_path_is_the_model_logits_and_raw_input(cnn):
    x = torch.randn(2, 1, 28, 28)
    with FeatureCapture(cnn, [""]) as out, FeatureCapture(cnn, [""], capture="input") as inp:
        logits = cnn(x)
    torch.testing.assert_close(out.features[""], logits)
    torch.testing.assert_close(inp.features[""], x)
    assert resolve_module(cnn, "") is cnn


def test_input_of_inplace_relu_is_the_pre_activation(cnn):
    x = torch.randn(2, 1, 28, 28)
    with FeatureCapture(cnn, ["block1.2"], capture="input") as cap:
        cnn(x)
    pre_act = cnn.block1[1](cnn.block1[0](x))  # BN output, before ReLU(inplace=True)
    torch.testing.assert_close(cap.features["block1.2"], pre_act)
    assert (cap.features["block1.2"] < 0).any()


def test_output_is_not_overwritten_by_a_later_inplace_op(cnn):
    x = torch.randn(2, 1, 28, 28)
    with FeatureCapture(cnn, ["block1.1"]) as cap:  # BatchNorm, followed by ReLU(inplace=True)
        cnn(x)
    assert (cap.features["block1.1"] < 0).any()


def test_module_called_twice_keeps_last_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(self.lin(x))

    model, x = Twice(), torch.randn(3, 4)
    with FeatureCapture(model, ["lin"]) as cap:
        out = model(x)
    torch.testing.assert_close(cap.features["lin"], out)


def test_tuple_output_takes_first_tensor():
    class Pair(nn.Module):
        def forward(self, x):
            return x * 2, x * 3

    model = nn.Sequential()
    model.add_module("pair", Pair())
    x = torch.randn(2, 3)
    with FeatureCapture(model, ["pair"]) as cap:
        model(x)
    torch.testing.assert_close(cap.features["pair"], x * 2)


def test_gradients_flow_through_captured_features(cnn):
    cnn.train()
    with FeatureCapture(cnn, ["block2", "block3.0"]) as cap:
        cnn(torch.randn(2, 1, 28, 28))
    assert all(f.requires_grad for f in cap.features.values())
    (cap.features["block2"].pow(2).mean() + cap.features["block3.0"].mean()).backward()
    assert cnn.block2[0].weight.grad is not None and cnn.block2[0].weight.grad.abs().sum() > 0
    assert cnn.block1[0].weight.grad is not None and cnn.block1[0].weight.grad.abs().sum() > 0
    assert cnn.fc.weight.grad is None  # nothing past the captured layers was part of the loss


@pytest.mark.parametrize("capture", ["output", "input"])
def test_hooks_removed_after_with_block(resnet, capture):
    with FeatureCapture(resnet, ["layer1.0.conv1", "layer3", ""], capture=capture) as cap:
        assert cap.active and _hook_count(resnet) == 3
        resnet(torch.randn(1, 3, 32, 32))
    assert not cap.active and _hook_count(resnet) == 0
    assert not resnet.layer1[0].conv1._forward_hooks and not resnet.layer1[0].conv1._forward_pre_hooks
    assert set(cap.features) == {"layer1.0.conv1", "layer3", ""}  # still readable after the block


def test_hooks_removed_after_exception(resnet):
    cap = FeatureCapture(resnet, ["layer1.0.conv1", "layer2"])
    with pytest.raises(RuntimeError, match="boom"), cap:
        resnet(torch.randn(1, 3, 32, 32))
        raise RuntimeError("boom")
    assert not cap.active
    assert not resnet.layer1[0].conv1._forward_hooks and not resnet.layer2._forward_hooks
    assert _hook_count(resnet) == 0


def test_register_twice_does_not_double_and_remove_is_idempotent(cnn):
    cap = FeatureCapture(cnn, ["block2", "block2"])  # a duplicate path is hooked once
    assert cap.layers == ["block2"]
    cap.register()
    cap.register()
    assert len(cnn.block2._forward_hooks) == 1 and _hook_count(cnn) == 1
    cap.remove()
    cap.remove()
    assert _hook_count(cnn) == 0 and not cap.active


def test_clear_empties_features(cnn):
    cap = FeatureCapture(cnn, ["block3"]).register()
    cnn(torch.randn(1, 1, 28, 28))
    assert "block3" in cap.features
    cap.clear()
    assert cap.features == {} and cap.active
    cap.remove()


def test_register_looks_modules_up_again(cnn):
    cap = FeatureCapture(cnn, ["block2.1"])
    old = cnn.block2[1]
    cnn.block2[1] = nn.BatchNorm2d(32)  # as a strategy swapping in SyncBatchNorm would
    with cap:
        assert len(cnn.block2[1]._forward_hooks) == 1 and not old._forward_hooks


def test_hooked_model_pickles(cnn):
    with FeatureCapture(cnn, ["block2"]):
        pickle.dumps(cnn)


def test_unknown_path_lists_close_names(resnet):
    with pytest.raises(ValueError, match=r"ResNet has no submodule 'layer1\.0\.conv'.*'layer1\.0\.conv1'"):
        FeatureCapture(resnet, ["layer1.0.conv"])
    with pytest.raises(ValueError, match=r"'block2'"):
        resolve_module(SmallCNN(), "blok2")


def test_unknown_path_without_close_names_lists_children(cnn):
    with pytest.raises(ValueError, match=r"top-level children are \['block1', 'pool1', 'block2'"):
        resolve_module(cnn, "encoder.stage4")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layers": "block2"}, r"use \['block2'\]"),
        ({"layers": []}, "layers is empty"),
        ({"layers": ["block2"], "capture": "grad"}, "capture must be 'output' or 'input', got 'grad'"),
    ],
)
def test_bad_arguments(cnn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureCapture(cnn, **kwargs)
