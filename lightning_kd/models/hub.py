"""Build torchvision or timm classifiers by name, so recipes can use them as teacher or student.

Weights are downloaded by those libraries only when ``pretrained=True``; nothing here downloads by default.
"""

from __future__ import annotations

from torch import nn


def torchvision_model(name: str, num_classes: int = 1000, weights: str | None = None) -> nn.Module:
    """A torchvision classification model, e.g. ``torchvision_model("resnet18", num_classes=10)``.

    Args:
        name: a name from ``torchvision.models.list_models(module=torchvision.models)``.
        num_classes: output logits (ignored when ``weights`` is given: the weights fix it).
        weights: e.g. ``"DEFAULT"`` or ``"IMAGENET1K_V1"`` (downloads); ``None`` for random init.
    """
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        import difflib

        close = difflib.get_close_matches(name, known, n=5)
        raise ValueError(f"unknown torchvision model {name!r}; closest: {close}.")
    if weights is not None:
        return torchvision.models.get_model(name, weights=weights)
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def timm_model(name: str, num_classes: int = 1000, pretrained: bool = False, in_chans: int = 3) -> nn.Module:
    """A timm model, e.g. ``timm_model("resnet18", num_classes=10)`` (needs ``pip install timm``)."""
    try:
        import timm
    except ImportError as err:
        raise ImportError("timm is not installed: `pip install timm` (or lightning-kd[timm]).") from err
    if name not in timm.list_models(pretrained=False) and not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}; see timm.list_models('{name[:4]}*').")
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
