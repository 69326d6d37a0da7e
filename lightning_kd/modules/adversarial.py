"""Adversarial KD: a discriminator tells teacher outputs from the student's; the student learns to fool it.

Xu, Hsu & Huang, "Training Shallow and Thin Networks for Acceleration via Knowledge Distillation with
Conditional Adversarial Networks", 2017, arXiv:1709.00513 (ICLR 2018 workshop): a discriminator learns to
separate the teacher's outputs from the student's, and the student is trained on its usual KD loss plus
the adversarial loss of fooling it. Followed here in its plain form: D sees only the output vector (no
conditioning on the input or label). KDGAN (Wang, Zhang, Sun & Qi, NeurIPS 2018) is a different game
(classifier, teacher and a discriminator on feature–label pairs, Gumbel-softmax samples); not this.

    discriminator step (student outputs detached; teacher = real = 1, student = fake = 0):
        L_D = ½ · [ BCE(D(t), 1) + BCE(D(s), 0) ]
    student step (D frozen; the non-saturating GAN loss on the student's side):
        L_S = (1 − α) · CE(s, y) + α · KD(s, t) + Σ w_k · term_k + λ_adv · BCE(D(s), 1)

``D`` sees ``softmax(z / T)`` (``input="probs"``) or the raw logits ``z`` (``input="logits"``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.losses import discriminator_loss, fooling_loss
from lightning_kd.models.discriminator import mlp_discriminator
from lightning_kd.modules.distillation import DistillationModule
from lightning_kd.modules.manual_steps import ManualSteps


class AdversarialDistillation(ManualSteps, DistillationModule):
    """:class:`~lightning_kd.DistillationModule` plus a discriminator that the student learns to fool.

    Each training batch (manual optimization, two optimizers):

    1. ``disc_steps`` discriminator updates on teacher outputs (real) vs detached student outputs (fake);
    2. one student update on the DistillationModule loss ``+ adv_weight · BCE(D(s), 1)``.

    ``toggle_optimizer`` turns ``requires_grad`` off for the other network's parameters during each update,
    and each optimizer holds only its own network's parameters; the teacher stays frozen as in
    DistillationModule. Checkpoints hold the discriminator's weights, both optimizer states and the
    student's LR scheduler, so resuming continues the game.

    ``global_step``: under manual optimization Lightning counts every ``LightningOptimizer.step()`` call
    (``_ManualOptimization._on_after_step`` increments ``optim_step_progress``, which
    ``trainer.global_step`` reads; Lightning issue #17958), so two optimizers would advance it
    ``disc_steps + 1`` times per batch while ``estimated_stepping_batches`` still counts batches —
    ``max_steps``, OneCycleLR's ``total_steps`` and the temperature/weight schedule callbacks would run
    ``disc_steps + 1`` times too fast. This module therefore counts the student's steps only: the
    discriminator is stepped through ``trainer.strategy.optimizer_step`` (the same update, precision
    plugin and ``on_before_optimizer_step`` hooks included, minus the counter). ``global_step`` is then
    one per batch, as in DistillationModule, and resumes from checkpoints unchanged.

    The LR scheduler (student only) is stepped here, as Lightning's automatic loop would: after every
    batch for ``step``, after the epoch's last batch for ``epoch``. Manual optimization rules out the
    Trainer's ``gradient_clip_val`` and ``accumulate_grad_batches``. Under DDP each backward leaves the
    other network's parameters unused: use ``strategy="ddp_find_unused_parameters_true"``.

    Args:
        teacher: the trained network or a teacher component (see DistillationModule).
        student: the network to train.
        discriminator: maps ``(N, C)`` model outputs to one real/fake logit per sample, ``(N,)`` or
            ``(N, 1)``. ``None``: :func:`mlp_discriminator` (64 hidden units, LeakyReLU) on ``num_classes``.
        adv_weight: ``λ_adv ≥ 0``, weight of the fooling term ``loss_adv`` in the student's loss.
        disc_optimizer: optimizer of the discriminator's parameters only; the default ``torch.optim.Adam``
            runs at its default ``lr=1e-3`` (YAML: ``class_path``/``init_args`` to change it).
        disc_steps: discriminator updates per batch (on the same batch), ``≥ 1``.
        input: what the discriminator sees: ``probs`` = ``softmax(z / T)``, ``logits`` = raw ``z``.
        **kwargs: :class:`DistillationModule`'s other arguments (``teacher_ckpt``, ``temperature``, ``alpha``,
            ``optimizer`` — the student's, never the discriminator's —, ``lr_scheduler``, ``distill_loss``,
            ``feature_terms``, …), passed through by name; a misspelt one fails there.

    Example:
        >>> from lightning_kd.models import MLP
        >>> m = AdversarialDistillation(MLP(64, 10, [256]), MLP(64, 10, [16]), adv_weight=0.1)
        >>> sorted(m.loss_weights)
        ['adv', 'ce', 'kd']
        >>> m.discriminate(torch.randn(8, 10)).shape
        torch.Size([8])
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        discriminator: nn.Module | None = None,
        adv_weight: float = 0.1,
        disc_optimizer: OptimizerCallable = torch.optim.Adam,
        disc_steps: int = 1,
        input: Literal["logits", "probs"] = "probs",
        **kwargs: Any,
    ) -> None:
        if not (math.isfinite(adv_weight) and adv_weight >= 0):
            raise ValueError(
                f"adv_weight must be a finite number >= 0 (weight of the fooling term), got {adv_weight}; e.g. 0.1."
            )
        if not isinstance(disc_steps, int) or disc_steps < 1:
            raise ValueError(f"disc_steps must be an int >= 1 (discriminator updates per batch), got {disc_steps}.")
        if input not in ("logits", "probs"):
            raise ValueError(f"input must be 'logits' or 'probs' (what the discriminator sees), got {input!r}.")
        super().__init__(teacher=teacher, student=student, **kwargs)
        self.automatic_optimization = False
        self.discriminator = discriminator if discriminator is not None else mlp_discriminator(self.num_classes)
        self.adv_weight = float(adv_weight)
        self.disc_optimizer = disc_optimizer
        self.disc_steps = disc_steps
        self.disc_input = input
        if "adv" in (t.name for t in self.feature_terms):
            raise ValueError("feature term name 'adv' is taken by the fooling term; rename the feature term.")

    @property
    def loss_weights(self) -> dict[str, float]:
        """DistillationModule's weights plus ``adv`` = ``adv_weight``."""
        return {**super().loss_weights, "adv": self.adv_weight}

    def discriminate(self, logits: Tensor) -> Tensor:
        """Discriminator logits ``(N,)`` (> 0: "teacher") for model logits ``(N, C)``, in fp32."""
        x = (logits.float() / self.temperature).softmax(-1) if self.disc_input == "probs" else logits.float()
        out = self.discriminator(x)
        if out.numel() != logits.shape[0]:
            raise ValueError(
                f"the discriminator returned shape {tuple(out.shape)} for {logits.shape[0]} samples; it must "
                "return one real/fake logit per sample, (N,) or (N, 1)."
            )
        return out.reshape(-1).float()

    # -- two optimizers -----------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        """The student optimizer's parameters: trainable ones outside the discriminator."""
        disc = {id(p) for p in self.discriminator.parameters()}
        return [p for p in super().trainable_parameters() if id(p) not in disc]

    def configure_optimizers(self) -> Any:
        student = super().configure_optimizers()  # an optimizer, or {"optimizer", "lr_scheduler"}
        student = student if isinstance(student, dict) else {"optimizer": student}
        disc = self.disc_optimizer([p for p in self.discriminator.parameters() if p.requires_grad])
        return [student, {"optimizer": disc}]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        opt_student, opt_disc = self.optimizers()
        step = self.global_step  # the student's step below moves it; the log belongs to this one
        batch = self.unpack_batch(batch)
        self._records.clear()
        with self.feature_terms.capturing():
            student_logits = self.forward_student(batch.inputs)
            teacher = self.forward_teacher(batch, training=True)
        teacher_logits = teacher.logits

        # (1) discriminator: teacher = real, student = fake; no gradient reaches the student
        self.toggle_optimizer(opt_disc)
        fake = student_logits.detach()
        for _ in range(self.disc_steps):
            d_teacher, d_student = self.discriminate(teacher_logits), self.discriminate(fake)
            disc_loss = discriminator_loss(d_student, d_teacher)
            opt_disc.zero_grad()
            self.manual_backward(disc_loss)
            self.step_uncounted(opt_disc)
        self.untoggle_optimizer(opt_disc)
        disc_acc = torch.cat([d_teacher > 0, d_student <= 0]).float().mean()  # before the last update

        # (2) student: the DistillationModule terms + fooling the (now frozen) discriminator
        self.toggle_optimizer(opt_student)
        terms = self.compute_losses(student_logits, teacher, batch)
        terms["adv"] = fooling_loss(self.discriminate(student_logits))
        loss = self.weighted_sum(terms)
        opt_student.zero_grad()
        self.manual_backward(loss)
        opt_student.step()
        self.untoggle_optimizer(opt_student)
        self.step_lr_scheduler(batch_idx)

        self.record("disc_loss", disc_loss)
        self.record("disc_acc", disc_acc)
        self.log_train(loss, terms, step)
        return loss.detach()
