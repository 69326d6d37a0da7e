"""Data-free KD: only the teacher is left; a synthesiser makes the inputs the student learns from.

Three synthesisers, one module (manual optimization; each batch of :class:`~lightning_kd.data.DataFreeDataModule`
is noise ``z`` and labels ``y``, never a real sample):

- ``dafl`` (Chen et al. 2019, arXiv:1904.01186): a generator ``G(z)`` trained on the teacher alone, to make it
  confident (one-hot), strongly activated and balanced over classes (:func:`~lightning_kd.losses.dafl_terms`;
  the paper's weights 1, 0.1, 5); the student learns KD on ``G(z)``.
- ``adversarial`` (ZSKT, Micaelli & Storkey 2019, arXiv:1905.09768): ``G`` maximises the student–teacher
  disagreement ``KL(p_T ‖ p_S)``; the student then takes ``student_steps`` KD updates (the paper: 10 per
  generator update) on fresh samples of ``G``.
- ``inversion`` (DeepInversion, Yin et al. 2020, arXiv:1912.08795): no generator; each batch starts from noise
  and its pixels are optimised for ``steps`` Adam steps towards the labels ``y`` under the teacher, with the
  teacher's BatchNorm statistics matched (:class:`~lightning_kd.losses.BatchNormStatistics`) and smoothness /
  L2 priors; the student then learns KD on the images. (The paper's "adaptive" competition term and its
  multi-resolution schedule are not implemented.)

``bn_weight > 0`` adds the BatchNorm-statistics term to a generator's loss too (as later data-free methods do).
The student's loss is the DistillationModule's on the synthetic batch, with the teacher's argmax as the labels of
the ``ce`` term (``alpha`` defaults to 1 here: KD only, as in the papers). Checkpoints hold the generator, the
student and both optimizers' states; ``global_step`` counts one step per batch (:class:`ManualSteps`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.core.batch import Batch
from lightning_kd.core.model_info import run_model
from lightning_kd.core.teacher import Teacher, TeacherOutput, output_logits
from lightning_kd.losses.data_free import (
    BatchNormStatistics,
    dafl_terms,
    disagreement,
    image_prior_l2,
    image_prior_tv,
)
from lightning_kd.modules.distillation import DistillationModule
from lightning_kd.modules.manual_steps import ManualSteps
from lightning_kd.modules.synthesis import Synthesis, feature_layer


class DataFreeDistillation(ManualSteps, DistillationModule):
    """Distil without the training data: a generator (``dafl``, ``adversarial``) or pixel optimisation
    (``inversion``) makes every training input; validation and test read real data when the data module has it.

    Args:
        teacher: the trained network (or a :class:`~lightning_kd.Teacher`); a live one: its outputs are
            differentiated with respect to the synthetic inputs (a cached teacher holds answers for real images
            only and is refused).
        student: the network to train.
        generator: ``z → images`` (e.g. :class:`~lightning_kd.models.ImageGenerator`); required by ``dafl`` and
            ``adversarial``, refused by ``inversion``.
        synthesis: a :class:`Synthesis` (or its fields as a dict).
        gen_optimizer: the generator's optimizer (default Adam, lr 1e-3).
        teacher_features: module path whose *input* is DAFL's feature vector; ``None``: the last ``nn.Linear``.
        **kwargs: :class:`DistillationModule`'s other arguments (``teacher_ckpt``, ``temperature``, ``alpha`` —
            default 1 here —, the student's ``optimizer`` and ``lr_scheduler``, ``distill_loss``, ``feature_terms``
            without connectors).

    Example:
        >>> from lightning_kd.models import ImageGenerator, SmallCNN
        >>> m = DataFreeDistillation(SmallCNN(1, 10, [8, 16, 32]), SmallCNN(1, 10, [4, 8, 16]),
        ...                          generator=ImageGenerator(16, 8, 1, 8))
        >>> m.synthesis.kind, sorted(m.generator_weights)
        ('dafl', ['act', 'ie', 'oh'])
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        generator: nn.Module | None = None,
        synthesis: Synthesis = Synthesis(),  # noqa: B008 - a frozen dataclass: immutable
        gen_optimizer: OptimizerCallable = torch.optim.Adam,
        teacher_features: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("alpha", 1.0)
        super().__init__(teacher=teacher, student=student, **kwargs)
        self.automatic_optimization = False
        self.synthesis = synthesis = Synthesis(**synthesis) if isinstance(synthesis, dict) else synthesis
        if not isinstance(self.teacher, Teacher):
            raise ValueError(
                f"data-free KD differentiates the teacher's outputs with respect to synthetic inputs; a "
                f"{type(self.teacher).__name__} cannot answer for inputs it has not seen. Give the live teacher "
                "network (teacher: class_path … with teacher_ckpt)."
            )
        if synthesis.kind == "inversion" and generator is not None:
            raise ValueError("Synthesis(kind='inversion') optimises the pixels directly: drop `generator`.")
        if synthesis.kind != "inversion" and generator is None:
            raise ValueError(
                f"Synthesis(kind={synthesis.kind!r}) trains a generator: give one, e.g. generator: {{class_path: "
                "lightning_kd.models.ImageGenerator, init_args: {latent_dim: 100, image_size: 28, channels: 1}}."
            )
        if any(t.needs_connectors for t in self.feature_terms):
            raise ValueError(
                "feature terms with connectors size them from a real example batch, which data-free KD does not "
                "have; use terms without connectors (e.g. AT, as ZSKT does)."
            )
        self.generator = generator
        self.gen_optimizer = gen_optimizer
        network = self.teacher.networks[0]
        self._bn_stats = BatchNormStatistics(network) if synthesis.bn > 0 else None
        layer = feature_layer(network, teacher_features) if synthesis.kind == "dafl" else None
        object.__setattr__(self, "_feature_layer", layer)  # a teacher layer: not a submodule of this module
        self._features: Tensor | None = None

    @property
    def generator_weights(self) -> dict[str, float]:
        """The weight of every term of the synthesiser's loss (those that are on)."""
        s = self.synthesis
        weights = {
            "dafl": {"oh": s.oh_weight, "act": s.act_weight, "ie": s.ie_weight},
            "adversarial": {"adv": s.adv_weight},
            "inversion": {"ce": 1.0, "tv": s.tv_weight, "l2": s.l2_weight},
        }[s.kind]
        if s.bn > 0:
            weights["bn"] = s.bn
        return weights

    # -- the teacher, differentiable in its inputs --------------------------------------------------------
    def teacher_logits(self, x: Tensor) -> Tensor:
        """The teacher's logits for synthetic ``x`` with a graph back to ``x`` (its weights stay frozen)."""
        return output_logits(run_model(self.teacher.networks[0], x, "teacher"), "teacher").float()

    def _synth_terms(self, x: Tensor, y: Tensor | None) -> dict[str, Tensor]:
        kind = self.synthesis.kind
        hook = None
        if kind == "dafl":
            hook = self._feature_layer.register_forward_pre_hook(self._keep_features)
        try:
            if self._bn_stats is not None:
                with self._bn_stats.recording():
                    logits = self.teacher_logits(x)
            else:
                logits = self.teacher_logits(x)
        finally:
            if hook is not None:
                hook.remove()
        if kind == "dafl":
            terms = dafl_terms(logits, self._features.flatten(1))
        elif kind == "adversarial":
            terms = {"adv": -disagreement(self.forward_student(x), logits)}  # G maximises the disagreement
        else:
            terms = {"ce": F.cross_entropy(logits, y), "tv": image_prior_tv(x), "l2": image_prior_l2(x)}
        if self._bn_stats is not None:
            terms["bn"] = self._bn_stats.loss()
        return terms

    def _keep_features(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        self._features = inputs[0]

    def _weighted(self, terms: dict[str, Tensor]) -> Tensor:
        weights = self.generator_weights
        return sum(weights[name] * value for name, value in terms.items())

    # -- synthesis ---------------------------------------------------------------------------------------
    def invert(self, y: Tensor) -> Tensor:
        """DeepInversion: images for labels ``y``, optimised from noise (returned detached)."""
        s = self.synthesis
        x = torch.randn(len(y), *s.image_shape, device=y.device, requires_grad=True)
        optimizer = torch.optim.Adam([x], lr=s.lr)
        # fp32 whatever the Trainer's precision: this backward is not the module's loss, so no grad scaler guards
        # fp16 gradients here; the pixels' gradients are small and would underflow
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            for _ in range(s.steps):
                optimizer.zero_grad(set_to_none=True)
                terms = self._synth_terms(x, y)
                loss = self._weighted(terms)
                loss.backward()  # a leaf tensor of its own; no module parameter takes part
                optimizer.step()
        for name, value in terms.items():
            self.record(f"synth_{name}", value.detach())
        self.record("synth_loss", loss.detach())
        return x.detach()

    def _generate(self, z: Tensor, optimizer: Any) -> Tensor:
        """One generator update on ``z``; returns the batch made before it (detached)."""
        self.toggle_optimizer(optimizer)
        x = self._check_latent(z)
        terms = self._synth_terms(x, None)
        loss = self._weighted(terms)
        optimizer.zero_grad()
        self.manual_backward(loss)
        self.step_uncounted(optimizer)
        self.untoggle_optimizer(optimizer)
        for name, value in terms.items():
            self.record(f"synth_{name}", value.detach())
        self.record("synth_loss", loss.detach())
        return x.detach()

    def _check_latent(self, z: Tensor) -> Tensor:
        expected = getattr(self.generator, "latent_dim", None)
        if expected is not None and z.shape[-1] != expected:
            raise ValueError(
                f"the data module gives noise of length {z.shape[-1]} but the generator takes latent_dim="
                f"{expected}; set DataFreeDataModule(latent_dim={expected})."
            )
        return self.generator(z)

    # -- two players ------------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        """The student optimizer's parameters: trainable ones outside the generator."""
        gen = {id(p) for p in self.generator.parameters()} if self.generator is not None else set()
        return [p for p in super().trainable_parameters() if id(p) not in gen]

    def configure_optimizers(self) -> Any:
        student = super().configure_optimizers()
        if self.generator is None:
            return student
        student = student if isinstance(student, dict) else {"optimizer": student}
        return [student, {"optimizer": self.gen_optimizer(list(self.generator.parameters()))}]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        z, y = batch[0], batch[1]
        step = self.global_step
        self._records.clear()
        optimizers = self.optimizers()
        opt_student = optimizers[0] if isinstance(optimizers, list) else optimizers
        if self.generator is None:
            x = self.invert(y)
        else:
            x = self._generate(z, optimizers[1])
        self.toggle_optimizer(opt_student)
        for k in range(self.synthesis.student_steps):
            if k > 0 and self.generator is not None:
                with torch.no_grad():
                    x = self.generator(torch.randn_like(z))
            loss, terms = self._student_loss(x)
            opt_student.zero_grad()
            self.manual_backward(loss)
            if k + 1 < self.synthesis.student_steps:
                self.step_uncounted(opt_student)
            else:
                opt_student.step()
        self.untoggle_optimizer(opt_student)
        self.step_lr_scheduler(batch_idx)
        self.log_train(loss, terms, step)
        return loss.detach()

    def _student_loss(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with self.feature_terms.capturing():
            student_logits = self.forward_student(x)
            teacher = self.forward_teacher(Batch(x), training=False)
        batch = Batch(x, targets=teacher.logits.argmax(-1))
        terms = self.compute_losses(student_logits, TeacherOutput(logits=teacher.logits), batch)
        return self.weighted_sum(terms), terms
