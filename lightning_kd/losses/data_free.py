"""Data-free distillation maths: what a synthesiser optimises when only the teacher is left. Pure torch.

- **BatchNorm statistics** (DeepInversion, Yin et al. 2020, arXiv:1912.08795, eq. 4): a synthetic batch should
  give every BatchNorm layer of the teacher the statistics it saw in training,
  ``R_feature(x) = Σ_l ‖μ_l(x) − E[μ_l]‖₂ + ‖σ²_l(x) − E[σ²_l]‖₂`` with the batch's per-channel mean and
  (biased) variance of the layer's *input* against the layer's running mean and variance.
  :class:`BatchNormStatistics` hooks the layers and collects the terms; :func:`bn_statistics_loss` sums them.
- **Image priors** (DeepInversion eq. 3): total variation and the L2 norm of the image.
- **DAFL** (Chen et al. 2019, arXiv:1904.01186, eq. 3–6): a generator's images should make the teacher confident
  (one-hot loss: CE against the teacher's own argmax), strongly activated (``−‖f_T‖₁``, the mean absolute
  feature before the classifier) and balanced over classes (information entropy of the batch-mean prediction,
  maximised: the loss is ``Σ_c p̄_c log p̄_c``; the paper's code uses log10, natural log here: a constant factor).
- **ZSKT** (Micaelli & Storkey 2019, arXiv:1905.09768): the generator looks for inputs where student and teacher
  disagree most, ``max_G KL(p_T ‖ p_S)``; the student then closes that gap on the same kind of inputs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BatchNormStatistics",
    "bn_statistics_loss",
    "dafl_terms",
    "disagreement",
    "image_prior_l2",
    "image_prior_tv",
]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def bn_statistics_loss(stats: Iterable[tuple[Tensor, Tensor, Tensor, Tensor]]) -> Tensor:
    """``Σ_l ‖mean_l − running_mean_l‖₂ + ‖var_l − running_var_l‖₂`` over ``(mean, var, running_mean,
    running_var)`` tuples (one per BatchNorm layer, per-channel vectors).

    Example:
        >>> m, v = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0])
        >>> float(bn_statistics_loss([(m, v, torch.tensor([1.0, 0.0]), torch.tensor([1.0, 4.0]))]))  # 2 + 3
        5.0
    """
    total = None
    for mean, var, running_mean, running_var in stats:
        term = torch.linalg.vector_norm(mean.float() - running_mean.float())
        term = term + torch.linalg.vector_norm(var.float() - running_var.float())
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no BatchNorm statistics were collected: did the hooked network run on the batch?")
    return total


class BatchNormStatistics:
    """Forward hooks on every BatchNorm layer of ``network`` that record the batch statistics of the layer's
    input (per channel: mean and biased variance over every other dimension) beside its running statistics.

    Use: ``with stats.recording(): network(x)``, then ``stats.loss()``. A network without BatchNorm layers is
    refused (DeepInversion has nothing to match).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).eval()
        >>> stats = BatchNormStatistics(net)
        >>> with stats.recording():
        ...     _ = net(torch.randn(8, 1, 6, 6))
        >>> stats.loss().shape, len(stats)
        (torch.Size([]), 1)
    """

    def __init__(self, network: nn.Module, what: str = "the teacher") -> None:
        self.layers = [m for m in network.modules() if isinstance(m, _BN)]
        if not self.layers:
            raise ValueError(
                f"{what} ({type(network).__name__}) has no BatchNorm layer: matching BatchNorm statistics "
                "(DeepInversion) needs the running mean and variance such layers keep. Use a teacher with "
                "BatchNorm, or a synthesiser that does not need them (DAFL or adversarial, bn_weight: 0)."
            )
        self.what = what
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._stats: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []

    def __len__(self) -> int:
        return len(self.layers)

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        x = inputs[0].float()
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        self._stats.append((mean, var, module.running_mean.float(), module.running_var.float()))

    def recording(self) -> BatchNormStatistics:
        return self

    def __enter__(self) -> BatchNormStatistics:
        self._stats = []
        self._handles = [layer.register_forward_hook(self._hook) for layer in self.layers]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def loss(self) -> Tensor:
        """:func:`bn_statistics_loss` of what the last recorded forward pass collected."""
        if any(layer.running_mean is None for layer in self.layers):
            raise ValueError(f"{self.what} has BatchNorm layers without running statistics (track_running_stats).")
        return bn_statistics_loss(self._stats)


def image_prior_tv(x: Tensor) -> Tensor:
    """Mean squared difference between horizontally and vertically neighbouring pixels of ``(N, C, H, W)``
    images (DeepInversion's smoothness prior, squared form).

    Example:
        >>> float(image_prior_tv(torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])))  # horizontal 1, 1; vertical 0, 0
        0.5
    """
    x = x.float()
    dh = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    dv = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    return (dh + dv) / 2


def image_prior_l2(x: Tensor) -> Tensor:
    """Mean squared pixel value (DeepInversion's ``‖x‖₂`` prior, per pixel)."""
    return x.float().pow(2).mean()


def dafl_terms(teacher_logits: Tensor, teacher_features: Tensor) -> dict[str, Tensor]:
    """DAFL's three generator terms, unweighted (the paper weighs them 1, 0.1 and 5):

    - ``oh``: ``CE(z_T, argmax z_T)``, the teacher's confidence on its own prediction;
    - ``act``: ``−mean |f_T|``, minus the mean absolute activation of the features before the classifier;
    - ``ie``: ``Σ_c p̄_c log p̄_c`` with ``p̄`` the batch-mean teacher softmax (minus its entropy; lowest,
      ``−log C``, when the batch covers every class evenly).

    Example:
        >>> logits = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
        >>> t = dafl_terms(logits, torch.tensor([[1.0, -3.0]]))
        >>> round(float(t["ie"]), 4), float(t["act"])   # -log 2: the two classes evenly; mean |f| = 2
        (-0.6931, -2.0)
    """
    logits = teacher_logits.float()
    p_mean = logits.softmax(-1).mean(0)
    return {
        "oh": F.cross_entropy(logits, logits.argmax(-1)),
        "act": -teacher_features.float().abs().mean(),
        "ie": (p_mean * p_mean.clamp_min(1e-12).log()).sum(),
    }


def disagreement(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(softmax(t/T) ‖ softmax(s/T))`` averaged over the batch: what ZSKT's generator maximises and its
    student minimises."""
    t = F.log_softmax(teacher_logits.float() / temperature, -1)
    s = F.log_softmax(student_logits.float() / temperature, -1)
    return (t.exp() * (t - s)).sum(-1).mean()
