"""What can be read off a model without running it. Pure torch."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn


def infer_num_classes(model: nn.Module) -> int | None:
    """``model.num_classes`` if set, else the ``out_features`` of its last ``nn.Linear``, else ``None``.

    Example:
        >>> from lightning_kd.models import MLP
        >>> infer_num_classes(MLP(64, 7, hidden=(16,)))
        7
    """
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def resolve_num_classes(n_teacher: int | None, student: nn.Module, num_classes: int | None) -> int:
    """The number of classes of a teacher/student pair: ``num_classes`` if given, else read off the models;
    ``ValueError`` naming both when the teacher, the student and ``num_classes`` disagree."""
    n_student = infer_num_classes(student)
    if n_teacher is not None and n_student is not None and n_teacher != n_student:
        raise ValueError(
            f"teacher predicts {n_teacher} classes but student predicts {n_student}; "
            "set the same num_classes on both models."
        )
    for who, n in (("student", n_student), ("teacher", n_teacher)):
        if num_classes is not None and n is not None and n != num_classes:
            raise ValueError(
                f"num_classes={num_classes} but the {who} predicts {n} classes; leave num_classes unset (it is "
                f"read off the models) or build the models with num_classes={num_classes}."
            )
    num_classes = num_classes or n_student or n_teacher
    if num_classes is None:
        raise ValueError("cannot infer the number of classes from the models; pass num_classes=…")
    return num_classes


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once); buffers are not parameters.

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> layer.bias.requires_grad = False
        >>> count_parameters(layer), count_parameters(layer, trainable_only=True)
        (8, 6)
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class InputShapeError(ValueError):
    """A model was given inputs of a shape it cannot take."""


class StepOutOfMemoryError(RuntimeError):
    """A forward pass ran out of memory; the message says which model, which batch size and what to lower."""


def first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The first layer (in registration order) that fixes the input's width: a Conv, Linear or Embedding."""
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Embedding)
    return next(((name, m) for name, m in model.named_modules() if isinstance(m, kinds)), None)


def expected_input(model: nn.Module) -> str:
    """What ``model`` takes, read off its first layer, e.g. ``"(N, 1, H, W) images (its first layer 'block1.0' is
    Conv2d(in_channels=1))"``; ``"?"`` when no such layer exists."""
    found = first_layer(model)
    if found is None:
        return "?"
    name, layer = found
    where = f"its first layer {name!r} is {type(layer).__name__}"
    if isinstance(layer, nn.Conv2d):
        return f"(N, {layer.in_channels}, H, W) images ({where}(in_channels={layer.in_channels}))"
    if isinstance(layer, (nn.Conv1d, nn.Conv3d)):
        return f"inputs with {layer.in_channels} channels in dim 1 ({where}(in_channels={layer.in_channels}))"
    if isinstance(layer, nn.Linear):
        return f"inputs whose features flatten to {layer.in_features} ({where}(in_features={layer.in_features}))"
    return f"token ids below {layer.num_embeddings} ({where}(num_embeddings={layer.num_embeddings}))"


def _describe_inputs(inputs: object) -> str:
    if hasattr(inputs, "shape"):
        return f"{tuple(inputs.shape)} {getattr(inputs, 'dtype', '')}".strip()
    if isinstance(inputs, Mapping):
        return "{" + ", ".join(f"{k}: {_describe_inputs(v)}" for k, v in inputs.items()) + "}"
    return type(inputs).__name__


def _batch_size(inputs: object) -> int | None:
    if hasattr(inputs, "shape") and len(inputs.shape):
        return int(inputs.shape[0])
    if isinstance(inputs, Mapping):
        return next((_batch_size(v) for v in inputs.values() if _batch_size(v) is not None), None)
    return None


_SHAPE_WORDS = ("shape", "size", "channels", "dimension", "Expected", "expected", "mat1", "out of range")
_OOM_WORDS = ("out of memory", "can't allocate memory", "not enough memory")


def run_model(model: nn.Module, inputs: object, who: str) -> object:
    """``model(inputs)`` (dict inputs as keyword arguments), with the errors a user can fix said plainly.

    Raises:
        InputShapeError: the model cannot take inputs of this shape; the message names the model, the inputs'
            shape, what the model expects and the fix.
        StepOutOfMemoryError: the forward pass ran out of memory; the message names the model, the batch size
            and what to lower.
    """
    try:
        if not isinstance(inputs, Tensor) and isinstance(inputs, Mapping):  # a dict, a HuggingFace BatchEncoding
            return model(**inputs)
        return model(inputs)
    except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError too
        text = str(err)
        name = type(model).__name__
        if any(w in text for w in _OOM_WORDS):
            n = _batch_size(inputs)
            raise StepOutOfMemoryError(
                f"out of memory running the {who} ({name}) on a batch of {n if n is not None else '?'}: lower the "
                "batch size (data.init_args.batch_size), train in bf16-mixed precision, or use "
                "trainer.accumulate_grad_batches to keep the effective batch; a smaller teacher batch needs a "
                f"smaller batch overall. ({text.splitlines()[0][:200]})"
            ) from err
        if any(w in text for w in _SHAPE_WORDS):
            raise InputShapeError(
                f"the {who} ({name}) cannot take inputs of shape {_describe_inputs(inputs)}: it expects "
                f"{expected_input(model)}. Check the data module (image size, channels, flattening) against the "
                f"model's init_args. ({text.splitlines()[0][:200]})"
            ) from err
        raise
