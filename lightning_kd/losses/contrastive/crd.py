"""Contrastive representation distillation: NCE over a memory bank of embeddings of the whole training set.

Tian, Krishnan & Isola, "Contrastive Representation Distillation", 2020, arXiv:1910.10699.

Student and teacher features are embedded by linear heads and L2-normalised to ``v_s``, ``v_t``. Two memory
banks hold a running embedding of every training sample (``bank_s`` from the student, ``bank_t`` from the
teacher). For sample ``i`` with ``K`` negative indices ``j_1..j_K`` the scores are

    out_s[i, k] = exp(bank_t[j_k] · v_s[i] / τ) / Z_s        (j_0 = i: the positive, column 0)
    out_t[i, k] = exp(bank_s[j_k] · v_t[i] / τ) / Z_t

and each side pays the NCE loss (Eq. 18 of the paper) with noise distribution ``P_n = 1 / n_data``:

    L = −(1/N) Σ_i [ log( P_pos / (P_pos + K·P_n + ε) ) + Σ_k log( K·P_n / (P_neg_k + K·P_n + ε) ) ]

``Z`` is set from the first batch (``mean(out) · n_data``) and then kept. After the scores, the banks'
rows at the batch indices move towards the new embeddings, ``m ← normalize(μ·m + (1 − μ)·v)``.
Defaults follow the official code (HobbitLong/RepDistiller, ``crd/``): 128-d embeddings, K = 16384,
τ = 0.07, μ = 0.5.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.losses._shapes import autocast_off, check_batch


def _check_positive_int(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")


def crd_nce_loss(scores: Tensor, n_data: int, eps: float = 1e-7) -> Tensor:
    """NCE loss of CRD on one side's scores (the official ``ContrastLoss``).

    Args:
        scores: ``(N, 1 + K)`` normalised scores ``exp(·/τ) / Z``; column 0 is the positive pair, the other
            ``K`` columns the negatives.
        n_data: size of the training set; the noise distribution is uniform, ``P_n = 1 / n_data``.
        eps: added to the denominators.

    Returns:
        0-d tensor (fp32): the negative log-likelihood summed over the ``1 + K`` pairs, averaged over ``N``.

    Example:
        >>> # K·P_n = 0.5 and every score 0.5: each of the two terms is −log 2.
        >>> round(crd_nce_loss(torch.tensor([[0.5, 0.5]]), n_data=2).item(), 3)
        1.386
    """
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(
            f"crd_nce_loss: scores must be (N, 1 + K) with the positive in column 0 and K >= 1 negatives, "
            f"got {tuple(scores.shape)}."
        )
    _check_positive_int(n_data=n_data)
    x = scores.float()
    k_pn = (x.shape[1] - 1) / n_data  # K · P_n
    p_pos, p_neg = x[:, 0], x[:, 1:]  # (N,), (N, K)
    log_d1 = torch.log(p_pos / (p_pos + k_pn + eps))
    log_d0 = torch.log(k_pn / (p_neg + k_pn + eps))
    return -(log_d1.sum() + log_d0.sum()) / x.shape[0]


class Embed(nn.Module):
    """Linear projection to ``out_dim`` followed by L2 normalisation; ``(N, C, H, W)`` inputs are flattened.

    Args:
        in_dim: values per sample of the input (``C·H·W`` for maps).
        out_dim: embedding size.

    Example:
        >>> Embed(8, 4)(torch.randn(2, 2, 2, 2)).shape
        torch.Size([2, 4])
    """

    def __init__(self, in_dim: int, out_dim: int = 128) -> None:
        super().__init__()
        _check_positive_int(in_dim=in_dim, out_dim=out_dim)
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (N, in_dim)
        if x.shape[1] != self.linear.in_features:
            raise ValueError(
                f"Embed: input has {x.shape[1]} values per sample but the head expects "
                f"{self.linear.in_features}; set the input dim to {x.shape[1]}."
            )
        return F.normalize(self.linear(x.to(self.linear.weight.dtype)), dim=1)


class ContrastMemory(nn.Module):
    """Student and teacher memory banks of the whole training set, and the CRD scores against them.

    Buffers (saved in checkpoints, moved by ``.to()``): ``bank_s`` and ``bank_t``, ``(n_data, feat_dim)``,
    initialised uniformly in ``[−stdv, stdv]`` with ``stdv = 1/sqrt(feat_dim/3)``; ``z_s`` and ``z_t``,
    the normalisation constants, ``−1`` until the first forward sets them to ``mean(out) · n_data``.
    The banks are updated only in training mode (so an evaluation pass leaves them alone).

    Args:
        feat_dim: embedding size.
        n_data: size of the training set (rows of each bank).
        num_negatives: ``K``, negatives per positive; must be ``< n_data``.
        nce_t: temperature ``τ``.
        momentum: ``μ`` of the bank update, in ``[0, 1)``.

    Example:
        >>> memory = ContrastMemory(feat_dim=4, n_data=10, num_negatives=3)
        >>> v = F.normalize(torch.randn(2, 4), dim=1)
        >>> [out.shape for out in memory(v, v, torch.tensor([0, 5]))]
        [torch.Size([2, 4]), torch.Size([2, 4])]
    """

    def __init__(
        self, feat_dim: int, n_data: int, num_negatives: int = 16384, nce_t: float = 0.07, momentum: float = 0.5
    ) -> None:
        super().__init__()
        _check_positive_int(feat_dim=feat_dim, n_data=n_data, num_negatives=num_negatives)
        if num_negatives >= n_data:
            raise ValueError(
                f"num_negatives={num_negatives} must be < n_data={n_data} (the training-set size); "
                f"use e.g. num_negatives={max(1, min(16384, n_data // 2))}."
            )
        if not (math.isfinite(nce_t) and nce_t > 0):
            raise ValueError(f"nce_t must be a finite number > 0, got {nce_t}. Use 0.07.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}. Use 0.5.")
        self.feat_dim, self.n_data, self.num_negatives = feat_dim, n_data, num_negatives
        self.nce_t, self.momentum = nce_t, momentum
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("bank_s", torch.rand(n_data, feat_dim).mul_(2 * stdv).sub_(stdv))
        self.register_buffer("bank_t", torch.rand(n_data, feat_dim).mul_(2 * stdv).sub_(stdv))
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))

    def sample_negatives(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """``(batch_size, K)`` indices drawn uniformly from ``[0, n_data)`` (the positive is not excluded)."""
        shape = (batch_size, self.num_negatives)
        return torch.randint(self.n_data, shape, device=self.bank_s.device, generator=generator)

    def _check_index(self, index: Tensor, name: str) -> Tensor:
        if index.dtype.is_floating_point or index.dtype == torch.bool:
            raise ValueError(f"ContrastMemory: {name} must hold integer dataset indices, got {index.dtype}.")
        # value check on host indices only (the loader's copy, which modules pass): a device one would sync
        if index.numel() and index.device.type == "cpu" and ((index < 0) | (index >= self.n_data)).any():
            raise IndexError(
                f"ContrastMemory: {name} holds values outside [0, {self.n_data}) "
                f"(min {int(index.min())}, max {int(index.max())}); indices must be positions in the training "
                f"set of n_data={self.n_data} samples."
            )
        return index.to(self.bank_s.device, torch.long)

    def forward(
        self, v_s: Tensor, v_t: Tensor, idx: Tensor, contrast_idx: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Scores of the positive (column 0) and ``K`` negatives for each side.

        Args:
            v_s: ``(N, feat_dim)`` L2-normalised student embeddings.
            v_t: ``(N, feat_dim)`` L2-normalised teacher embeddings.
            idx: ``(N,)`` dataset index of each sample: its positive and the bank rows it updates.
            contrast_idx: ``(N, K)`` negative indices; drawn with :meth:`sample_negatives` when ``None``.
                (The official dataset returns ``(N, 1 + K)`` with the positive first: pass ``[:, 1:]``.)

        Returns:
            ``(out_s, out_t)``, each ``(N, 1 + K)`` fp32: ``out_s`` scores ``v_s`` against ``bank_t``,
            ``out_t`` scores ``v_t`` against ``bank_s``.
        """
        n = v_s.shape[0]
        for name, v in (("v_s", v_s), ("v_t", v_t)):
            if v.shape != (n, self.feat_dim):
                raise ValueError(f"ContrastMemory: {name} must be ({n}, {self.feat_dim}), got {tuple(v.shape)}.")
        if idx.shape != (n,):
            raise ValueError(f"ContrastMemory: idx must be ({n},), a dataset index per sample, got {tuple(idx.shape)}.")
        idx = self._check_index(idx, "idx")
        if contrast_idx is None:
            contrast_idx = self.sample_negatives(n)
        elif contrast_idx.shape != (n, self.num_negatives):
            raise ValueError(
                f"ContrastMemory: contrast_idx must be ({n}, {self.num_negatives}) negatives only (the positive "
                f"idx is put in column 0 here), got {tuple(contrast_idx.shape)}."
            )
        else:
            contrast_idx = self._check_index(contrast_idx, "contrast_idx")
        all_idx = torch.cat([idx[:, None], contrast_idx], dim=1)  # (N, 1 + K)

        with autocast_off(v_s):
            v_s32, v_t32 = v_s.float(), v_t.float()
            # The banks are buffers: the gathered rows carry no graph, so updating the banks below is safe.
            w_t = self.bank_t[all_idx].float()  # (N, 1 + K, D)
            w_s = self.bank_s[all_idx].float()
            out_s = torch.exp(torch.bmm(w_t, v_s32[:, :, None]).squeeze(2) / self.nce_t)  # (N, 1 + K)
            out_t = torch.exp(torch.bmm(w_s, v_t32[:, :, None]).squeeze(2) / self.nce_t)
            if self.training:  # a dry run or validation pass in eval mode must not fix Z or touch the banks
                with torch.no_grad():
                    # Set Z once, from the first batch, without a host sync: keep it where it is already set.
                    self.z_s.copy_(torch.where(self.z_s < 0, out_s.mean() * self.n_data, self.z_s))
                    self.z_t.copy_(torch.where(self.z_t < 0, out_t.mean() * self.n_data, self.z_t))
            out_s = out_s / self.z_s.float()
            out_t = out_t / self.z_t.float()
            if self.training:
                self._update(idx, v_s32, v_t32)
        return out_s, out_t

    @torch.no_grad()
    def _update(self, idx: Tensor, v_s: Tensor, v_t: Tensor) -> None:
        idx, v_s, v_t = _gather_across_ranks(idx, v_s, v_t)
        for bank, v in ((self.bank_s, v_s), (self.bank_t, v_t)):
            rows = bank[idx].float() * self.momentum + v * (1.0 - self.momentum)
            bank.index_copy_(0, idx, F.normalize(rows, dim=1).to(bank.dtype))


def _gather_across_ranks(idx: Tensor, v_s: Tensor, v_t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Under torch.distributed, every rank's (indices, embeddings), so all ranks apply the same bank update.

    Without it each rank writes only its own samples' rows and DDP's buffer broadcast (rank 0's banks copied
    to all ranks before every forward) throws the other ranks' rows away. Batches may differ in size.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return idx, v_s, v_t
    world = torch.distributed.get_world_size()
    if world == 1:
        return idx, v_s, v_t
    n = torch.tensor([idx.shape[0]], device=idx.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    torch.distributed.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]  # one small sync per step, only under DDP
    biggest = max(sizes)
    out = []
    for t in (idx, v_s, v_t):
        padded = torch.zeros((biggest, *t.shape[1:]), dtype=t.dtype, device=t.device)
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(world)]
        torch.distributed.all_gather(parts, padded)
        out.append(torch.cat([p[:k] for p, k in zip(parts, sizes)]))
    return out[0], out[1], out[2]


class CRDLoss(nn.Module):
    """CRD with its trainable embedding heads and its memory banks: ``loss_s + loss_t``.

    ``embed_s`` and ``embed_t`` (:class:`Embed`) are trained; the teacher *features* are detached, so the
    gradient of the teacher side reaches ``embed_t`` only. ``memory`` is a :class:`ContrastMemory`.

    Args:
        student_dim: values per sample of the student feature (``C·H·W`` for maps).
        teacher_dim: values per sample of the teacher feature.
        n_data: size of the training set; batches must carry each sample's index in it.
        feat_dim: embedding size.
        num_negatives: ``K``, negatives per positive (``< n_data``).
        nce_t: temperature ``τ``.
        momentum: momentum of the memory-bank update.

    Example:
        >>> loss = CRDLoss(student_dim=16, teacher_dim=32, n_data=100, num_negatives=8)
        >>> loss(torch.randn(4, 16), torch.randn(4, 32), index=torch.arange(4)).shape
        torch.Size([])
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        n_data: int,
        feat_dim: int = 128,
        num_negatives: int = 16384,
        nce_t: float = 0.07,
        momentum: float = 0.5,
    ) -> None:
        super().__init__()
        self.embed_s = Embed(student_dim, feat_dim)
        self.embed_t = Embed(teacher_dim, feat_dim)
        self.memory = ContrastMemory(feat_dim, n_data, num_negatives, nce_t, momentum)

    def forward(
        self, student_feat: Tensor, teacher_feat: Tensor, index: Tensor, contrast_index: Tensor | None = None
    ) -> Tensor:
        """CRD loss of a batch.

        Args:
            student_feat: ``(N, student_dim)`` or ``(N, C, H, W)`` student feature.
            teacher_feat: ``(N, teacher_dim)`` or ``(N, C, H, W)`` teacher feature; no gradient flows into it.
            index: ``(N,)`` position of each sample in the training set (see ``IndexedDataset``).
            contrast_index: optional ``(N, K)`` negative indices; uniform over the training set when ``None``.

        Returns:
            0-d tensor (fp32).
        """
        check_batch(student_feat, teacher_feat, "CRDLoss")
        with autocast_off(student_feat):
            v_s = self.embed_s(student_feat)  # (N, feat_dim)
            v_t = self.embed_t(teacher_feat.detach())
        out_s, out_t = self.memory(v_s, v_t, index, contrast_index)
        n_data = self.memory.n_data
        return crd_nce_loss(out_s, n_data) + crd_nce_loss(out_t, n_data)
