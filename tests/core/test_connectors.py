"""build_connector / check_same_shape: shapes, resize choice, trainability, error messages."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_kd.core.connectors import Connector, build_connector, check_same_shape


@pytest.mark.parametrize(
    ("student", "teacher", "resize"),
    [
        ((8, 16, 14, 14), (8, 64, 7, 7), "pool"),
        ((8, 16, 7, 7), (8, 64, 14, 14), "interpolate"),
        ((8, 16, 7, 7), (8, 64, 7, 7), "none"),
        ((8, 32), (8, 64), "none"),
        ((8, 16, 7, 7), (8, 64), "global_pool"),
    ],
)
def test_output_shape_and_resize(student, teacher, resize):
    connector = build_connector(student, teacher)
    assert isinstance(connector, Connector) and connector.resize == resize
    assert connector(torch.randn(student)).shape == torch.Size(teacher)


def test_spatial_connector_is_conv1x1_bn_and_resizes_first():
    connector = build_connector((8, 16, 14, 14), (8, 64, 7, 7)).eval()
    conv, bn = connector.proj
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.bias is None
    assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == 64
    x = torch.randn(8, 16, 14, 14)
    torch.testing.assert_close(connector(x), bn(conv(F.adaptive_avg_pool2d(x, (7, 7)))))
    up = build_connector((8, 16, 7, 7), (8, 64, 14, 14)).eval()
    y = torch.randn(8, 16, 7, 7)
    expected = up.proj(F.interpolate(y, size=(14, 14), mode="bilinear", align_corners=False))
    torch.testing.assert_close(up(y), expected)


def test_flat_connectors_are_linear():
    assert isinstance(build_connector((8, 32), (8, 64)).proj, nn.Linear)
    pooled = build_connector((8, 16, 7, 7), (8, 64))
    x = torch.randn(8, 16, 7, 7)
    torch.testing.assert_close(pooled(x), pooled.proj(x.mean(dim=(2, 3))))


def test_identity_only_when_asked_and_shapes_equal():
    assert isinstance(build_connector((8, 32), (4, 32), identity_if_equal=True), nn.Identity)  # batch ignored
    assert isinstance(build_connector((8, 16, 7, 7), (8, 16, 7, 7), identity_if_equal=True), nn.Identity)
    assert isinstance(build_connector((8, 32), (8, 32)).proj, nn.Linear)  # FitNets: a regressor by default
    assert not isinstance(build_connector((8, 32), (8, 64), identity_if_equal=True), nn.Identity)


def test_repr_shows_resize_and_projection():
    text = repr(build_connector((8, 16, 14, 14), (8, 64, 7, 7)))
    assert "resize='pool', size=(7, 7)" in text and "Conv2d(16, 64" in text and "BatchNorm2d(64" in text


@pytest.mark.parametrize(
    ("student", "teacher"),
    [((8, 16, 14, 14), (8, 64, 7, 7)), ((8, 16, 7, 7), (8, 64, 14, 14)), ((8, 32), (8, 64)), ((8, 16, 7, 7), (8, 64))],
)
def test_parameters_get_gradients(student, teacher):
    connector = build_connector(student, teacher)
    x = torch.randn(student, requires_grad=True)
    F.mse_loss(connector(x), torch.randn(teacher)).backward()
    params = list(connector.parameters())
    assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert x.grad is not None and x.grad.abs().sum() > 0  # and on through to the student


def test_flat_student_to_spatial_teacher_is_rejected():
    with pytest.raises(ValueError, match=r"flat student feature \(8, 32\).*spatial teacher.*conv layer"):
        build_connector((8, 32), (8, 64, 7, 7))


def test_unsupported_rank_is_rejected():
    with pytest.raises(ValueError, match=r"student shape \(8, 10, 32\) is not supported"):
        build_connector((8, 10, 32), (8, 64))


def test_check_same_shape():
    check_same_shape((8, 64, 7, 7), torch.Size([4, 64, 7, 7]), "layer3", "layer3")  # batch dims may differ
    with pytest.raises(ValueError) as err:
        check_same_shape((8, 16, 7, 7), torch.Size([8, 64, 7, 7]), "block3", "layer3.1")
    message = str(err.value)
    assert "'block3'" in message and "(16, 7, 7)" in message
    assert "'layer3.1'" in message and "(64, 7, 7)" in message
    assert "set connector=True on this loss term, or pick layers with matching shapes" in message
