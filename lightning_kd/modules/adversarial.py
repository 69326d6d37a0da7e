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

import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn

from lightning_kd.base import built_by_cli
from lightning_kd.module import DistillationModule
from lightning_kd.terms import FeatureTerm


def discriminator_loss(d_student: Tensor, d_teacher: Tensor) -> Tensor:
    """``½ · [BCE(D(t), 1) + BCE(D(s), 0)]`` on discriminator logits ``(N,)``; 0-d tensor."""
    real = F.binary_cross_entropy_with_logits(d_teacher, torch.ones_like(d_teacher))
    fake = F.binary_cross_entropy_with_logits(d_student, torch.zeros_like(d_student))
    return 0.5 * (real + fake)


def fooling_loss(d_student: Tensor) -> Tensor:
    """``BCE(D(s), 1)``: small when the discriminator takes the student for the teacher; 0-d tensor."""
    return F.binary_cross_entropy_with_logits(d_student, torch.ones_like(d_student))


def mlp_discriminator(num_classes: int, hidden: int = 64) -> nn.Module:
    """The default discriminator: ``Linear(C, h) → LeakyReLU(0.2) → Linear(h, h) → LeakyReLU(0.2) → Linear(h, 1)``."""
    return nn.Sequential(
        nn.Linear(num_classes, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, 1),
    )


class AdversarialDistillation(DistillationModule):
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
        teacher: the trained network (YAML: ``class_path``/``init_args``).
        student: the network to train.
        teacher_ckpt: weights for the teacher (see DistillationModule).
        temperature: softening temperature ``T > 0`` of the KD term and of ``input="probs"``.
        alpha: weight of the KD term in ``[0, 1]``; CE gets ``1 − α``.
        num_classes: classes; inferred from the student when ``None``.
        optimizer: optimizer of the student (and connectors, trainable loss parts), never the discriminator.
        lr_scheduler: optional LR scheduler of the student's optimizer.
        scheduler_interval: ``auto``, ``step`` or ``epoch`` (see DistillationModule).
        distill_loss: the logit term ``kd`` (see DistillationModule).
        feature_terms: feature/relation loss terms (see DistillationModule).
        save_teacher: also store the teacher's weights in checkpoints.
        teacher_eval: keep the teacher in eval mode.
        discriminator: maps ``(N, C)`` model outputs to one real/fake logit per sample, ``(N,)`` or
            ``(N, 1)``. ``None``: :func:`mlp_discriminator` (64 hidden units, LeakyReLU) on ``num_classes``.
        adv_weight: ``λ_adv ≥ 0``, weight of the fooling term ``loss_adv`` in the student's loss.
        disc_optimizer: optimizer of the discriminator's parameters only; the default ``torch.optim.Adam``
            runs at its default ``lr=1e-3`` (YAML: ``class_path``/``init_args`` to change it).
        disc_steps: discriminator updates per batch (on the same batch), ``≥ 1``.
        input: what the discriminator sees: ``probs`` = ``softmax(z / T)``, ``logits`` = raw ``z``.

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
        teacher_ckpt: str | None = None,
        temperature: float | None = None,
        alpha: float = 0.9,
        num_classes: int | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["auto", "step", "epoch"] = "auto",
        distill_loss: nn.Module | None = None,
        feature_terms: list[FeatureTerm] | None = None,
        save_teacher: bool = False,
        teacher_eval: bool = True,
        discriminator: nn.Module | None = None,
        adv_weight: float = 0.1,
        disc_optimizer: OptimizerCallable = torch.optim.Adam,
        disc_steps: int = 1,
        input: Literal["logits", "probs"] = "probs",
    ) -> None:
        if adv_weight < 0:
            raise ValueError(f"adv_weight must be >= 0 (weight of the fooling term), got {adv_weight}; e.g. 0.1.")
        if not isinstance(disc_steps, int) or disc_steps < 1:
            raise ValueError(f"disc_steps must be an int >= 1 (discriminator updates per batch), got {disc_steps}.")
        if input not in ("logits", "probs"):
            raise ValueError(f"input must be 'logits' or 'probs' (what the discriminator sees), got {input!r}.")
        if discriminator is not None and not built_by_cli():
            # DistillationModule's save_hyperparameters sees this frame's arguments and warns that a module
            # is among them; the call below drops it. Silence exactly that message, as DistillationModule
            # does for the teacher's eval mode.
            warnings.filterwarnings("ignore", message=r"Attribute 'discriminator' is an instance of `nn.Module`")
        super().__init__(
            teacher,
            student,
            teacher_ckpt,
            temperature,
            alpha,
            num_classes,
            optimizer,
            lr_scheduler,
            scheduler_interval,
            distill_loss,
            feature_terms,
            save_teacher,
            teacher_eval,
        )
        # saved again without the discriminator and its optimizer, which from Python would be pickled
        ignored = ["teacher", "student", "optimizer", "lr_scheduler", "distill_loss", "feature_terms"]
        self.save_hyperparameters(ignore=[] if built_by_cli() else [*ignored, "discriminator", "disc_optimizer"])
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
        inputs, targets = self.unpack_batch(batch)
        student_logits = self.forward_student(inputs)
        teacher_logits = self.teacher_logits(batch, inputs)

        # (1) discriminator: teacher = real, student = fake; no gradient reaches the student
        self.toggle_optimizer(opt_disc)
        fake = student_logits.detach()
        for _ in range(self.disc_steps):
            d_teacher, d_student = self.discriminate(teacher_logits), self.discriminate(fake)
            disc_loss = discriminator_loss(d_student, d_teacher)
            opt_disc.zero_grad()
            self.manual_backward(disc_loss)
            self._step_uncounted(opt_disc)
        self.untoggle_optimizer(opt_disc)
        disc_acc = torch.cat([d_teacher > 0, d_student <= 0]).float().mean()  # before the last update

        # (2) student: the DistillationModule terms + fooling the (now frozen) discriminator
        self.toggle_optimizer(opt_student)
        terms = self.compute_losses(student_logits, teacher_logits, targets, self.batch_indices(batch))
        terms["adv"] = fooling_loss(self.discriminate(student_logits))
        weights = self.loss_weights
        loss = sum(weights[name] * value for name, value in terms.items())
        opt_student.zero_grad()
        self.manual_backward(loss)
        opt_student.step()
        self.untoggle_optimizer(opt_student)
        self._step_lr_scheduler(batch_idx)

        self.log("train/loss", loss, prog_bar=True)
        for name, value in terms.items():
            self.log(f"train/loss_{name}", value)
        self.log("train/disc_loss", disc_loss)
        self.log("train/disc_acc", disc_acc)
        self.log("train/temperature", self._knobs[0])  # device buffers: no host-to-device copy per step
        self.log("train/alpha", self._knobs[1])
        return loss.detach()

    def _step_uncounted(self, optimizer: LightningOptimizer) -> None:
        # LightningOptimizer.step() = strategy.optimizer_step() + one more global_step (class docstring)
        self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None)

    def _step_lr_scheduler(self, batch_idx: int) -> None:
        # where Lightning's automatic loop steps it: after each batch, or after the epoch's last batch
        # (before validation, so an end-of-epoch checkpoint holds the stepped scheduler)
        if not self.trainer.lr_scheduler_configs:
            return
        config = self.trainer.lr_scheduler_configs[0]
        last = self.trainer.is_last_batch or batch_idx + 1 == self.trainer.num_training_batches
        if config.interval == "step" or last:
            config.scheduler.step()
