"""On-policy (GKD) and sequence-level KD: the per-step draw, the generated batch, the loss on it, end to end."""

from __future__ import annotations

import lightning as L
import pytest
import torch

pytest.importorskip("transformers")

from lightning_kd.cache.lm_teacher import CachedLMTeacher  # noqa: E402
from lightning_kd.core.batch import Batch  # noqa: E402
from lightning_kd.core.lm import Generation  # noqa: E402
from lightning_kd.data.text import PackedTextDataModule  # noqa: E402
from lightning_kd.losses.divergence import Divergence  # noqa: E402
from lightning_kd.losses.token import token_divergence  # noqa: E402
from lightning_kd.modules.causal_lm import CausalLMDistillation  # noqa: E402
from tests.lm_helpers import V, tiny, write_corpus  # noqa: E402


def make_dm(tmp_path) -> PackedTextDataModule:
    corpus = write_corpus(tmp_path / "corpus")
    return PackedTextDataModule(
        text_dir=str(corpus), pattern="*.py", vocab_size=V, val_fraction=0.3, seq_len=16, batch_size=4,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip


class Capture(L.Callback):
    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batches.append(batch["input_ids"].clone())


@pytest.mark.parametrize("source", ["student", "teacher"])
def test_a_generated_step_distils_on_the_generated_text_with_the_stated_loss(tmp_path, source, monkeypatch):
    dm = make_dm(tmp_path)
    args = dict(on_policy=1.0) if source == "student" else dict(sequence_kd=1.0)
    module = CausalLMDistillation(
        teacher=tiny(1), student=tiny(2), chunk_size=None, alpha=0.5, divergence="jsd",
        generation=Generation(prompt_len=6, **args),
    )  # fmt: skip
    seen = {}
    generate = Generation.generate

    def spy(self, model, batch, eos, pad, **kwargs):
        seen["model"], seen["prompt"] = model, batch.inputs["input_ids"][:, :6].clone()
        out = generate(self, model, batch, eos, pad, **kwargs)
        seen["generated"] = out
        return out

    monkeypatch.setattr(Generation, "generate", spy)
    logged = {}
    monkeypatch.setattr(module, "log_step", lambda loss, terms=None, batch_idx=0: logged.update(loss=loss, **terms))
    capture = Capture()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[capture],
    )  # fmt: skip
    student_before = {k: v.clone() for k, v in module.student.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in module.teacher.model.state_dict().items()}
    trainer.fit(module, dm)
    assert seen["model"] is (module.student if source == "student" else module.teacher.model)
    gen: Batch = seen["generated"]
    assert torch.equal(gen.inputs["input_ids"][:, :6], capture.batches[0][:, :6])  # the data's prompt
    assert not torch.equal(gen.inputs["input_ids"], capture.batches[0])  # a new continuation
    assert (gen.targets[:, :6] == -100).all()
    # the logged terms are the loss on the generated batch, computed here independently with the start weights
    student, teacher = tiny(2), tiny(1)
    student.load_state_dict(student_before)
    teacher.load_state_dict(teacher_before)
    with torch.no_grad():
        s = student(**gen.inputs).logits[:, :-1].reshape(-1, V)
        t = teacher(**gen.inputs).logits[:, :-1].reshape(-1, V)
    y = gen.targets[:, 1:].reshape(-1)
    keep = y != -100
    div = token_divergence(s[keep], t[keep], Divergence("jsd", beta=0.5)).mean()
    ce = torch.nn.functional.cross_entropy(s[keep], y[keep])
    torch.testing.assert_close(logged["kd"], div, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logged["ce"], ce, rtol=1e-4, atol=1e-5)
    expected = 0.5 * div if source == "student" else 0.5 * ce + 0.5 * div  # no CE on the student's own samples
    torch.testing.assert_close(logged["loss"], expected, rtol=1e-4, atol=1e-5)
    for k, v in module.teacher.model.state_dict().items():
        assert torch.equal(v, teacher_before[k])  # the teacher generated (or scored) and stayed untouched


def test_on_policy_needs_a_teacher_model_and_room_to_generate(tmp_path):
    with pytest.raises(ValueError, match="needs the teacher's model to score"):
        CausalLMDistillation(
            teacher=CachedLMTeacher(str(tmp_path)), student=tiny(2), chunk_size=None, generation={"on_policy": 0.5}
        )
    mix = Generation(on_policy=1.0, prompt_len=16)
    batch = Batch({"input_ids": torch.zeros(2, 16, dtype=torch.long)}, None)
    with pytest.raises(ValueError, match="leave nothing to generate after prompt_len=16"):
        mix.generate(tiny(2), batch, None, 0)


def test_mixed_run_trains_end_to_end_with_the_chunked_loss(tmp_path):
    dm = make_dm(tmp_path)
    generation = Generation(on_policy=0.5, sequence_kd=0.25, prompt_len=4)
    module = CausalLMDistillation(teacher=tiny(1), student=tiny(2), generation=generation)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0, limit_val_batches=1,
        log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(module, dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
