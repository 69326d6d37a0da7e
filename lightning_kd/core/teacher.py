"""The teacher component: one object that holds a frozen model (or an offline cache) and answers one call.

Every distillation LightningModule talks to its teacher only through :class:`TeacherBase`::

    out = teacher(inputs, index=None, epoch=None)  # -> TeacherOutput, fp32, no gradient

- :class:`Teacher` wraps a live ``nn.Module``: it loads weights from a checkpoint or ``state_dict`` file,
  switches ``requires_grad`` off at construction (so before the Trainer sets up DDP/FSDP: their reducers
  and flat parameters must never see these parameters, Lightning issue #6087), stays in eval mode whatever calls
  ``.train()``, runs under ``torch.no_grad()`` (not ``inference_mode``, whose tensors cannot be saved
  for backward, pytorch PR #161164) and returns fp32 logits (autocast runs the teacher in bf16/fp16).
- :class:`TeacherEnsemble` holds several teachers; its logits are stacked ``(K, N, C)``.
- :class:`lightning_kd.cache.CachedTeacher` reads the teacher's logits of a training view from an offline
  cache by ``(epoch, index)`` instead of running a model: the same call, the same output.

Checkpoints leave teacher weights out (:meth:`TeacherBase.checkpoint_keys`); the LightningModule drops
those keys in ``on_save_checkpoint`` and puts the live tensors back in ``on_load_checkpoint`` (not a
``state_dict`` override, which FSDP bypasses).

Pure torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lightning_kd.core.model_info import run_model
from lightning_kd.core.weights import load_weights

if TYPE_CHECKING:
    from lightning_kd.core.lm.token_loss import TokenLoss


@dataclass
class TeacherOutput:
    """What a teacher answers. Every tensor is fp32 (ids int64) and carries no gradient.

    Attributes:
        logits: dense logits, ``(N, C)`` for classifiers, ``(K, N, C)`` for an ensemble, ``(B, T, V)`` for a
            causal LM; ``None`` when the teacher cannot produce them (a cache without a model, at eval time).
        topk_logprobs: ``(..., k)`` log-probabilities of the teacher's ``k`` most likely classes/tokens, for
            sparse (offline top-k) teachers.
        topk_ids: ``(..., k)`` the classes/token ids of ``topk_logprobs``.
        hidden: final hidden states ``(B, T, H)``, for a loss that applies the teacher's head itself in chunks.
        head: ``(weight (V, H), bias (V,) or None)`` of the lm head that turns ``hidden`` into logits.
        temperature: the ``T`` that ``topk_logprobs`` are softened at (an offline store's), when it is fixed.
        features: captured intermediate features by layer path.
    """

    logits: Tensor | None = None
    topk_logprobs: Tensor | None = None
    topk_ids: Tensor | None = None
    hidden: Tensor | None = None
    head: tuple[Tensor, Tensor | None] | None = None
    temperature: float | None = None
    features: dict[str, Tensor] = field(default_factory=dict)


def output_logits(output: Any, who: str = "model") -> Tensor:
    """The logits in a model's output: a tensor itself, ``output.logits`` (HuggingFace ``ModelOutput``),
    ``output["logits"]``, or the first element of a tuple/list (``(logits, features)`` models).

    Raises:
        TypeError: none of these; the message names the type and the fix.
    """
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if logits is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        logits = output[0]
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"cannot find logits in the {who}'s output of type {type(output).__name__}; return a tensor, an object "
            "with .logits, a dict with 'logits' or a (logits, ...) tuple — or override forward_student / use a "
            "Teacher subclass whose forward extracts them."
        )
    return logits


class TeacherBase(nn.Module):
    """The contract every teacher component keeps (see the module docstring).

    Attributes:
        eval_mode: stay in eval mode whatever calls ``.train()``.
        save_weights: keep this teacher's weights in checkpoints.
    """

    eval_mode: bool = True
    save_weights: bool = False
    #: whether hooks on :attr:`networks` can capture intermediate features (not for a cache)
    serves_features: bool = False
    #: whether the teacher checks the data's tokenizer itself (an offline LM store records the one it was built with)
    checks_vocab: bool = False

    def forward(self, inputs: Any, index: Tensor | None = None, epoch: int | None = None) -> TeacherOutput:
        """Teacher outputs for ``inputs``.

        Args:
            inputs: what the model takes (a tensor, or a dict of tensors passed as keyword arguments).
            index: dataset indices of the training samples ``(N,)`` int64, given in training steps only: the
                loader's copy on the host when there is one (a memory-mapped store reads it without waiting for
                the accelerator), else on the batch's device. A teacher that needs them on the device moves them.
            epoch: the training epoch, given in training steps only (with ``index`` it names the exact
                augmented view an offline cache stored).
        """
        raise NotImplementedError

    @property
    def networks(self) -> list[nn.Module]:
        """The live models whose layers feature terms may hook (empty for a cache)."""
        return []

    @property
    def num_classes(self) -> int | None:
        """Classes the teacher predicts, when known."""
        from lightning_kd.core.model_info import infer_num_classes

        found = [infer_num_classes(n) for n in self.networks]
        return next((n for n in found if n is not None), None)

    def prepare_fit(self, datamodule: Any = None, max_epochs: int | None = None) -> None:
        """Called once when ``fit`` sets up, before any step: a cache opens and checks itself here."""

    def inputs(self) -> list[tuple[str, str]]:
        """``(what, path)`` of the files and folders this teacher reads (its checkpoint, a cache or store): a run
        must never write over them."""
        return []

    def token_loss(self, chunk_size: int | None) -> TokenLoss:
        """The token-loss strategy that fits what this teacher provides (causal-LM teachers override it)."""
        raise TypeError(
            f"a {type(self).__name__} cannot teach a causal LM token by token: give the model itself (it is wrapped "
            "in a CausalLMTeacher), a CausalLMTeacher or a CachedLMTeacher."
        )

    def release(self) -> None:
        """Called when ``fit`` ends: free what :meth:`prepare_fit` opened."""

    def train(self, mode: bool = True) -> TeacherBase:
        """``.train()`` reaches the teacher only when ``eval_mode`` is off."""
        return super().train(mode and not self.eval_mode)

    def checkpoint_keys(self, prefix: str) -> list[str]:
        """Keys of this component (under ``prefix``) a checkpoint leaves out: all of them, unless
        ``save_weights``; with ``eval_mode`` off the buffers stay (BatchNorm statistics change in train mode)."""
        if self.save_weights:
            return []
        keys = list(self.state_dict(prefix=prefix, keep_vars=True))
        if self.eval_mode:
            return keys
        buffers = {prefix + name for name, _ in self.named_buffers(remove_duplicate=False)}
        return [k for k in keys if k not in buffers]

    def refill(self, state: dict[str, Any], prefix: str) -> None:
        """Put this component's live tensors into ``state`` where a checkpoint left them out."""
        for key, value in self.state_dict(prefix=prefix).items():
            state.setdefault(key, value)


class Teacher(TeacherBase):
    """A live, frozen teacher model.

    Args:
        model: the trained network (YAML: ``class_path``/``init_args``). Any ``nn.Module`` whose output is a
            logits tensor, has ``.logits`` (HuggingFace), a ``"logits"`` key, or is a ``(logits, ...)`` tuple.
            Dict inputs are passed as keyword arguments (``model(**inputs)``).
        ckpt: weights for ``model``: a ClassificationModule/DistillationModule checkpoint or a ``state_dict``
            file (``module.``/``_orig_mod.`` prefixes handled). ``None`` keeps the model as built.
        eval_mode: keep the model in eval mode (BatchNorm statistics and dropout fixed). ``False`` lets
            ``.train()`` reach it, for methods that want teacher BatchNorm in train mode.
        save_weights: keep the teacher's weights in checkpoints (by default they are left out and put back
            from the live model on load).
        allow_pickle: let ``ckpt`` be read with full unpickling (only for a file you trust, e.g. an old
            checkpoint that pickled its optimizer).

    Example:
        >>> from lightning_kd.models import MLP
        >>> t = Teacher(MLP(64, 10))
        >>> t(torch.randn(2, 64)).logits.shape, any(p.requires_grad for p in t.parameters())
        (torch.Size([2, 10]), False)
    """

    serves_features = True

    def __init__(
        self,
        model: nn.Module,
        ckpt: str | None = None,
        eval_mode: bool = True,
        save_weights: bool = False,
        allow_pickle: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(model, TeacherBase):
            raise TypeError("Teacher(model=...) takes the network itself, not another teacher component.")
        if ckpt is not None:
            load_weights(model, ckpt, what="teacher_ckpt", allow_pickle=allow_pickle, role="teacher")
        self.ckpt = None if ckpt is None else str(ckpt)
        model.requires_grad_(False)  # before strategy setup: DDP/FSDP must never see these as trainable
        self.model = model
        self.eval_mode = bool(eval_mode)
        self.save_weights = bool(save_weights)
        self.train(False)

    @property
    def networks(self) -> list[nn.Module]:
        return [self.model]

    def inputs(self) -> list[tuple[str, str]]:
        return [] if self.ckpt is None else [("the teacher's checkpoint", self.ckpt)]

    def forward(self, inputs: Any, index: Tensor | None = None, epoch: int | None = None) -> TeacherOutput:
        with torch.no_grad():
            out = run_model(self.model, inputs, "teacher")
        return TeacherOutput(logits=output_logits(out, "teacher").float())


class TeacherEnsemble(TeacherBase):
    """Several teachers answering as one: ``logits`` stacked ``(K, N, C)``.

    Args:
        teachers: teacher components (or plain models, wrapped in :class:`Teacher`).

    Example:
        >>> from lightning_kd.models import MLP
        >>> TeacherEnsemble([MLP(64, 10), MLP(64, 10)])(torch.randn(3, 64)).logits.shape
        torch.Size([2, 3, 10])
    """

    def __init__(self, teachers: Sequence[nn.Module]) -> None:
        super().__init__()
        if not teachers:
            raise ValueError("TeacherEnsemble needs at least one teacher.")
        self.members = nn.ModuleList(t if isinstance(t, TeacherBase) else Teacher(t) for t in teachers)
        self.serves_features = all(t.serves_features for t in self.members)
        self.eval_mode = all(t.eval_mode for t in self.members)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def networks(self) -> list[nn.Module]:
        return [n for t in self.members for n in t.networks]

    def forward(self, inputs: Any, index: Tensor | None = None, epoch: int | None = None) -> TeacherOutput:
        outs = [t(inputs, index, epoch) for t in self.members]
        if any(o.logits is None for o in outs):
            return TeacherOutput()
        return TeacherOutput(logits=torch.stack([o.logits for o in outs]))

    def prepare_fit(self, datamodule: Any = None, max_epochs: int | None = None) -> None:
        for t in self.members:
            t.prepare_fit(datamodule, max_epochs)

    def inputs(self) -> list[tuple[str, str]]:
        return [item for t in self.members for item in t.inputs()]

    def release(self) -> None:
        for t in self.members:
            t.release()

    def train(self, mode: bool = True) -> TeacherEnsemble:
        nn.Module.train(self, mode)  # each member applies its own eval_mode
        return self

    def checkpoint_keys(self, prefix: str) -> list[str]:
        return []  # the members are teacher components themselves and answer for their own keys

    def refill(self, state: dict[str, Any], prefix: str) -> None:
        return None


def as_teacher(teacher: nn.Module, ckpt: str | None = None) -> TeacherBase:
    """``teacher`` itself when it is a teacher component, else a :class:`Teacher` around it loaded from ``ckpt``.

    A component carries its own settings (``ckpt``, ``eval_mode``, ``save_weights``), so a component together with
    the module's ``teacher_ckpt`` shortcut is refused.
    """
    if isinstance(teacher, TeacherBase):
        if ckpt is not None:
            raise ValueError(
                f"teacher is a {type(teacher).__name__} component: set its checkpoint on the component itself "
                f"(ckpt: {ckpt!r}), not teacher_ckpt on the module."
            )
        return teacher
    return Teacher(teacher, ckpt=ckpt)
