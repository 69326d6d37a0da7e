"""DeiT distillation: the distillation token's head learns the teacher, the class token's head the labels, inference
averages the two (module, ViT and exported ONNX alike), timm's distilled DeiT models plug in, refusals named."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_kd import DeiTDistillation
from lightning_kd.core.batch import Batch
from lightning_kd.core.teacher import TeacherOutput
from lightning_kd.losses import hard_distillation_loss
from lightning_kd.models import SmallCNN, ViT


def _vit(distilled: bool = True) -> ViT:
    torch.manual_seed(0)
    return ViT(8, 4, 1, 10, dim=16, depth=1, heads=2, distilled=distilled)


def test_the_two_heads_in_training_and_their_mean_at_inference():
    vit = _vit()
    x = torch.randn(3, 1, 8, 8)
    cls, dist = vit.train()(x)
    assert cls.shape == dist.shape == (3, 10) and not torch.allclose(cls, dist)
    tokens = vit.tokens(x)  # the heads read token 0 (class) and token 1 (distillation)
    assert torch.allclose(cls, vit.head(tokens[:, 0])) and torch.allclose(dist, vit.head_dist(tokens[:, 1]))
    assert torch.allclose(vit.eval()(x), (cls + dist) / 2, atol=1e-6)
    plain = _vit(distilled=False)
    assert plain.train()(x).shape == (3, 10) and plain.head_dist is None and plain.pos_embed.shape[1] == 4 + 1
    with pytest.raises(ValueError, match="patch_size=3 must divide image_size=8"):
        ViT(8, 3)
    with pytest.raises(ValueError, match="heads=3 must divide dim=16"):
        ViT(8, 4, dim=16, heads=3)


def test_hard_and_soft_losses_against_their_formulas():
    module_hard = DeiTDistillation(SmallCNN(1, 10, [4, 8, 8]), _vit())
    module_soft = DeiTDistillation(SmallCNN(1, 10, [4, 8, 8]), _vit(), distillation="soft")
    assert module_hard.loss_weights == {"ce": 0.5, "kd": 0.5}
    assert module_soft.loss_weights == pytest.approx({"ce": 0.9, "kd": 0.1}) and module_soft.temperature == 3.0
    torch.manual_seed(1)
    cls, dist, teacher = torch.randn(4, 10), torch.randn(4, 10), torch.randn(4, 10)
    y = torch.tensor([0, 1, 2, 3])
    batch = Batch(torch.zeros(4, 1, 8, 8), y)
    hard = module_hard.compute_losses((cls, dist), TeacherOutput(logits=teacher), batch)
    assert hard["ce"] == pytest.approx(float(F.cross_entropy(cls, y)))
    assert hard["kd"] == pytest.approx(float(F.cross_entropy(dist, teacher.argmax(-1))))  # on the dist head
    total = module_hard.weighted_sum(hard)
    assert float(total) == pytest.approx(0.5 * float(F.cross_entropy(cls, y)) + 0.5 * float(hard["kd"]))
    soft = module_soft.compute_losses((cls, dist), TeacherOutput(logits=teacher), batch)
    p_t = (teacher / 3).softmax(-1)
    kl = (p_t * (p_t.log() - (dist / 3).log_softmax(-1))).sum(-1).mean()
    assert float(soft["kd"]) == pytest.approx(9 * float(kl), rel=1e-5)  # τ² · KL, on the distillation head
    # a one-output student: both terms on its head (DeiT's "usual distillation")
    one = module_hard.compute_losses(cls, TeacherOutput(logits=teacher), batch)
    assert float(one["kd"]) == pytest.approx(float(hard_distillation_loss(cls, teacher)))
    with pytest.raises(ValueError, match=r"distillation must be 'hard' .* or 'soft'.*ClassificationModule"):
        DeiTDistillation(SmallCNN(1, 10, [4, 8, 8]), _vit(), distillation="none")


def test_each_head_learns_its_own_target(trainer_factory, digits):
    """A hard-distillation fit moves the distillation head with the teacher's argmax and the class head with the
    labels: with a teacher that always says class 7, the distillation head comes to say 7 and the class head not."""

    class Always7(torch.nn.Module):
        num_classes = 10

        def forward(self, x):
            out = torch.zeros(x.shape[0], 10)
            out[:, 7] = 10.0
            return out

    module = DeiTDistillation(Always7(), _vit(), optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    trainer_factory(max_epochs=3, limit_val_batches=0).fit(module, digits)
    x, y = next(iter(digits.test_dataloader()))
    cls, dist = module.student.train()(x)
    assert (dist.argmax(-1) == 7).float().mean() > 0.9
    assert (cls.argmax(-1) == y).float().mean() > 0.5
    module.eval()
    averaged = module(x)
    assert torch.allclose(averaged, (cls + dist) / 2, atol=1e-5)


def test_the_exported_student_averages_the_two_heads(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from lightning_kd.report.export import export_onnx

    vit = _vit()
    x = torch.randn(5, 1, 8, 8)
    cls, dist = vit.train()(x)
    export_onnx(vit, x, tmp_path / "vit.onnx")
    assert vit.training  # the caller's model is left as it was
    session = ort.InferenceSession(str(tmp_path / "vit.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert out.shape == (5, 10)
    assert torch.allclose(torch.from_numpy(out), (cls + dist).detach() / 2, atol=1e-4)


def test_timm_distilled_deit_plugs_in(trainer_factory, digits):
    timm = pytest.importorskip("timm")
    student = timm.create_model(
        "deit_tiny_distilled_patch16_224", pretrained=False, img_size=8, patch_size=4, in_chans=1, num_classes=10,
        embed_dim=16, depth=1, num_heads=2,
    )  # fmt: skip
    module = DeiTDistillation(SmallCNN(1, 10, [4, 8, 8]), student)
    out = module.train().forward_student(torch.randn(2, 1, 8, 8))
    assert isinstance(out, tuple) and len(out) == 2  # set_distilled_training(True) was called
    trainer_factory(max_steps=2, limit_val_batches=1).fit(module, digits)
    assert math.isfinite(float(trainer_factory().validate(module, digits, verbose=False)[0]["val/acc"]))
