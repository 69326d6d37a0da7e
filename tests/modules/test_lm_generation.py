"""On-policy (GKD) and sequence-level KD: the per-step draw, the generated batch, the loss on it, end to end."""

from __future__ import annotations

import lightning as L
import pytest
import torch

pytest.importorskip("transformers")

from tests.lm_helpers import V, tiny, write_corpus  # noqa: E402

from lightning_kd.cache.lm_teacher import CachedLMTeacher  # noqa: E402
from lightning_kd.core.batch import Batch  # noqa: E402
from lightning_kd.data.text import PackedTextDataModule  # noqa: E402
from lightning_kd.losses.token import token_divergence  # noqa: E402
from lightning_kd.modules.causal_lm import CausalLMDistillation  # noqa: E402
from lightning_kd.modules.lm_generation import GenerationMix, continuation_batch  # noqa: E402


def make_dm(tmp_path) -> PackedTextDataModule:
    corpus = write_corpus(tmp_path / "corpus")
    return PackedTextDataModule(
        text_dir=str(corpus), pattern="*.py", vocab_size=V, val_fraction=0.3, seq_len=16, batch_size=4,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip


def test_the_draw_depends_only_on_seed_and_step_and_has_the_asked_rates():
    a, b = GenerationMix(on_policy=0.3, sequence_kd=0.2, seed=7), GenerationMix(on_policy=0.3, sequence_kd=0.2, seed=7)
    draws = [a.draw(s) for s in range(4000)]
    assert draws == [b.draw(s) for s in range(4000)]  # two ranks, or a resumed run: the same branch per step
    assert abs(draws.count("student") / 4000 - 0.3) < 0.03
    assert abs(draws.count("teacher") / 4000 - 0.2) < 0.03
    assert draws != [GenerationMix(on_policy=0.3, sequence_kd=0.2, seed=8).draw(s) for s in range(4000)]
    assert {GenerationMix().draw(s) for s in range(100)} == {"data"}
    with pytest.raises(ValueError, match=r"on_policy=0.7 \+ sequence_kd=0.5 > 1"):
        GenerationMix(on_policy=0.7, sequence_kd=0.5)
    with pytest.raises(ValueError, match="on_policy must be a probability in"):
        GenerationMix(on_policy=1.5)


def test_continuation_labels_skip_the_prompt_and_what_follows_the_end_of_text():
    eos, pad = 9, 0
    ids = torch.tensor([[1, 2, 3, 4, 9, 5, 6], [1, 2, 7, 8, 6, 5, 4]])  # row 0 stops at position 4
    batch = continuation_batch(ids, prompt_len=2, length=8, eos_token_id=eos, pad_token_id=pad)
    assert batch.inputs["input_ids"].tolist() == [[1, 2, 3, 4, 9, 5, 6, 0], [1, 2, 7, 8, 6, 5, 4, 0]]
    assert batch.targets.tolist() == [[-100, -100, 3, 4, 9, -100, -100, -100], [-100, -100, 7, 8, 6, 5, 4, 0]]
    assert batch.inputs["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]]
    assert batch.index is None


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
        teacher=tiny(1), student=tiny(2), chunk_size=None, alpha=0.5, divergence="jsd", prompt_len=6, **args
    )
    seen = {}
    generate = module.generation.generate

    def spy(model, batch, eos, pad):
        seen["model"], seen["prompt"] = model, batch.inputs["input_ids"][:, :6].clone()
        out = generate(model, batch, eos, pad)
        seen["generated"] = out
        return out

    monkeypatch.setattr(module.generation, "generate", spy)
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
    div = token_divergence(s[keep], t[keep], kind="jsd", beta=0.5).mean()
    ce = torch.nn.functional.cross_entropy(s[keep], y[keep])
    torch.testing.assert_close(logged["kd"], div, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logged["ce"], ce, rtol=1e-4, atol=1e-5)
    expected = 0.5 * div if source == "student" else 0.5 * ce + 0.5 * div  # no CE on the student's own samples
    torch.testing.assert_close(logged["loss"], expected, rtol=1e-4, atol=1e-5)
    for k, v in module.teacher.model.state_dict().items():
        assert torch.equal(v, teacher_before[k])  # the teacher generated (or scored) and stayed untouched


def test_on_policy_needs_a_teacher_model_and_room_to_generate(tmp_path):
    with pytest.raises(ValueError, match="needs the teacher's model to score"):
        CausalLMDistillation(teacher=CachedLMTeacher(str(tmp_path)), student=tiny(2), chunk_size=None, on_policy=0.5)
    mix = GenerationMix(on_policy=1.0, prompt_len=16)
    batch = Batch({"input_ids": torch.zeros(2, 16, dtype=torch.long)}, None)
    with pytest.raises(ValueError, match="leave nothing to generate after prompt_len=16"):
        mix.generate(tiny(2), batch, None, 0)


def test_mixed_run_trains_end_to_end_with_the_chunked_loss(tmp_path):
    dm = make_dm(tmp_path)
    module = CausalLMDistillation(teacher=tiny(1), student=tiny(2), on_policy=0.5, sequence_kd=0.25, prompt_len=4)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0, limit_val_batches=1,
        log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(module, dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
