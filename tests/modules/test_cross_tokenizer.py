"""Cross-tokenizer distillation as users run it: a SentencePiece-style Llama teacher folder into a Qwen-style student
folder with another vocabulary; the identity case equals same-tokenizer KD; refusals and warnings name the fix; bits
per byte on a crafted case."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers")

from lightning_kd.data.text import PackedTextDataModule  # noqa: E402
from lightning_kd.models import pretrained_lm  # noqa: E402
from lightning_kd.modules import cross_tokenizer as cross_module  # noqa: E402
from lightning_kd.modules.causal_lm import CausalLMDistillation, CausalLMModule  # noqa: E402
from lightning_kd.modules.cross_tokenizer import CrossTokenizerDistillation  # noqa: E402
from tests.lm_families import family_tokenizer, metaspace_tokenizer, model_folder  # noqa: E402
from tests.lm_helpers import Batches, V, tiny, trainer, write_corpus  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cross")
    write_corpus(root / "corpus")
    return root


@pytest.fixture(scope="module")
def folders(root):
    teacher_tok = metaspace_tokenizer(root / "corpus", 400)  # Llama 2 style: ▁, <s> in front
    student_tok = family_tokenizer("qwen", root / "corpus", 300)  # Qwen style: byte-level, no BOS
    teacher = model_folder(root, "llama", 1, width=48, layers=2, tok=teacher_tok)
    student = model_folder(root, "qwen2", 2, tok=student_tok)
    return teacher, student


def _data(root, tmp_path, tokenizer, teacher_tokenizer=None, seq_len=24):
    return PackedTextDataModule(
        text_dir=str(root / "corpus"), pattern="*.py", tokenizer=tokenizer, teacher_tokenizer=teacher_tokenizer,
        seq_len=seq_len, batch_size=4, val_fraction=0.3, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip


@pytest.mark.parametrize("loss", ["span_kl", "uld"])
def test_a_llama_teacher_distils_into_a_qwen_student_of_another_vocabulary(root, folders, tmp_path, loss):
    teacher_dir, student_dir = folders
    teacher, student = pretrained_lm(str(teacher_dir)), pretrained_lm(str(student_dir))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_before = {k: v.clone() for k, v in student.state_dict().items()}
    module = CrossTokenizerDistillation(teacher, student, loss=loss, alpha=0.5, chunk_size=8)
    terms, log_step = [], module.log_step
    module.log_step = lambda loss, named=None, **kw: (terms.append(named), log_step(loss, named, **kw))[1]
    dm = _data(root, tmp_path, str(student_dir), str(teacher_dir))
    tr = trainer(tmp_path, max_steps=3)
    tr.fit(module, datamodule=dm)
    assert len(terms) == 3 and all(math.isfinite(float(t["kd"])) and float(t["kd"]) > 0 for t in terms)
    (scores,) = trainer(tmp_path, limit_val_batches=1.0).validate(module, datamodule=dm, verbose=False)
    val = dm.splits["val"]
    scored = len(val) * (val.seq_len - 1)  # every position but the last predicts a token
    assert 0.0 < scores["val/bpb"] < 20.0 and scores["val/bpb"] == pytest.approx(
        scores["val/loss"] / math.log(2) * scored / _val_bytes(dm), rel=1e-4
    )
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # teacher untouched
    assert any(not torch.equal(s_before[k], v) for k, v in student.state_dict().items())
    assert 0.3 < dm.stats["train_aligned"] <= 1.0


def _val_bytes(dm) -> int:
    val = dm.splits["val"]
    return int(val.s_bytes[val.rows][:, 1:].sum())  # the scored (predicted) tokens' bytes


def test_identical_tokenizers_train_exactly_as_same_tokenizer_kd(root, tmp_path):
    tok = family_tokenizer("gpt2", root / "corpus")
    results = []
    for cls in (CausalLMDistillation, CrossTokenizerDistillation):
        teacher, student = tiny(1, hidden=48, vocab=len(tok)), tiny(2, vocab=len(tok))
        module = cls(teacher, student, alpha=0.7, temperature=2.0, chunk_size=16,
                     optimizer=lambda p: torch.optim.SGD(p, lr=0.5))  # fmt: skip
        dm = _data(root, tmp_path / cls.__name__, tok, tok)
        trainer(tmp_path, max_steps=2, limit_val_batches=0).fit(module, datamodule=dm)
        results.append(student.state_dict())
    for name, value in results[0].items():
        torch.testing.assert_close(results[1][name], value, rtol=1e-4, atol=1e-6)


def test_mismatched_vocabularies_are_refused_with_the_way_to_cross_tokenizer_kd(root, folders, tmp_path):
    teacher_dir, student_dir = folders
    module = CausalLMDistillation(pretrained_lm(str(teacher_dir)), pretrained_lm(str(student_dir)))
    with pytest.raises(ValueError, match="CrossTokenizerDistillation.*teacher_tokenizer"):
        trainer(tmp_path).fit(module, datamodule=_data(root, tmp_path, str(student_dir)))


def test_cross_tokenizer_kd_refuses_data_without_the_teacher_tokenization(root, folders, tmp_path):
    teacher_dir, student_dir = folders
    module = CrossTokenizerDistillation(pretrained_lm(str(teacher_dir)), pretrained_lm(str(student_dir)))
    with pytest.raises(ValueError, match="teacher_tokenizer=<the teacher's tokenizer>"):
        trainer(tmp_path).fit(module, datamodule=_data(root, tmp_path, str(student_dir)))


def test_a_teacher_tokenizer_that_is_not_the_teachers_is_refused(root, folders, tmp_path):
    teacher_dir, student_dir = folders
    module = CrossTokenizerDistillation(pretrained_lm(str(teacher_dir)), pretrained_lm(str(student_dir)))
    wrong = family_tokenizer("gemma", root / "corpus", 350)
    with pytest.raises(ValueError, match="the teacher's vocabulary .* is not the data's teacher_tokenizer's"):
        trainer(tmp_path).fit(module, datamodule=_data(root, tmp_path, str(student_dir), wrong))


def test_bad_loss_is_refused():
    with pytest.raises(ValueError, match="'span_kl'.*'uld', got 'kl'"):
        CrossTokenizerDistillation(tiny(1), tiny(2), loss="kl")


def test_pairs_that_share_little_are_warned_about_with_the_figure(root, folders, tmp_path, monkeypatch):
    teacher_dir, student_dir = folders
    monkeypatch.setattr(cross_module, "MIN_SHARED", 1.01)  # everything counts as "too little" here
    module = CrossTokenizerDistillation(pretrained_lm(str(teacher_dir)), pretrained_lm(str(student_dir)))
    with pytest.warns(UserWarning) as record:
        trainer(tmp_path, max_steps=1).fit(module, datamodule=_data(root, tmp_path, str(student_dir), str(teacher_dir)))
    text = " ".join(str(w.message) for w in record)
    assert "of the student's predictions align" in text and "have a student token with the same bytes" in text
    assert "%" in text


def test_bits_per_byte_on_a_crafted_batch(tmp_path):
    model = tiny(0)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # logits 0: uniform over V, CE = ln V per token
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone(),
             "token_bytes": torch.tensor([[1, 2, 3, 4, 5]])}  # fmt: skip
    tr = trainer(tmp_path)
    (out,) = tr.validate(CausalLMModule(model, chunk_size=None), datamodule=Batches([batch]), verbose=False)
    # four predictions (tokens 2..5) of 2 + 3 + 4 + 5 = 14 bytes: 4 · log2(V) bits over 14 bytes
    assert out["val/bpb"] == pytest.approx(4 * math.log2(V) / 14, rel=1e-5)
    assert out["val/loss"] == pytest.approx(math.log(V), rel=1e-5)


def test_chat_records_distil_across_chat_templates_and_vocabularies(root, tmp_path):
    from lightning_kd.data.prompt_response import PromptResponseDataModule
    from tests.data.test_cross_chat import CHATS, PAIRS, _jsonl

    teacher_tok = family_tokenizer("llama3", root / "corpus", 350)  # Llama 3 headers, <|begin_of_text|>
    teacher_dir = model_folder(root, "olmo2", 3, width=48, layers=2, tok=teacher_tok)
    student_dir = model_folder(root, "qwen2", 4, tok=family_tokenizer("qwen", root / "corpus", 300))  # ChatML
    data = _jsonl(tmp_path / "chat.jsonl", (CHATS + PAIRS) * 2)
    dm = PromptResponseDataModule(data, data, tokenizer=str(student_dir), teacher_tokenizer=str(teacher_dir),
                                  batch_size=2, max_length=96, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    teacher, student = pretrained_lm(str(teacher_dir)), pretrained_lm(str(student_dir))
    module = CrossTokenizerDistillation(teacher, student, alpha=0.5, chunk_size=None)
    terms, log_step = [], module.log_step
    module.log_step = lambda loss, named=None, **kw: (terms.append(named), log_step(loss, named, **kw))[1]
    tr = trainer(tmp_path, max_steps=2)
    tr.fit(module, datamodule=dm)
    assert all(float(t["kd"]) > 0 for t in terms) and len(terms) == 2
    (scores,) = trainer(tmp_path).validate(module, datamodule=dm, verbose=False)
    assert 0.0 < scores["val/bpb"] < 20.0


def test_first_piece_map_trains_and_bad_map_kind_is_refused(root, folders, tmp_path):
    teacher_dir, student_dir = folders
    module = CrossTokenizerDistillation(pretrained_lm(str(teacher_dir)), pretrained_lm(str(student_dir)),
                                        teacher_map="first_piece", chunk_size=8)  # fmt: skip
    trainer(tmp_path, max_steps=2).fit(module, datamodule=_data(root, tmp_path, str(student_dir), str(teacher_dir)))
    assert not module._shared.one_to_one  # several teacher tokens give their mass to one student token
    assert list((tmp_path / "cache").glob("vocab-map-v3-first_piece-*.npy"))
    with pytest.raises(ValueError, match="teacher_map must be 'shared' or 'first_piece', got 'nearest'"):
        CrossTokenizerDistillation(tiny(1), tiny(2), teacher_map="nearest")


def test_a_teacher_whose_context_cannot_hold_its_tokens_of_a_sequence_is_refused(root, folders, tmp_path):
    teacher_dir, student_dir = folders
    teacher = pretrained_lm(str(teacher_dir))
    teacher.config.max_position_embeddings = 8  # as a small-context teacher would say
    module = CrossTokenizerDistillation(teacher, pretrained_lm(str(student_dir)))
    with pytest.raises(ValueError, match=r"reaches \d+ tokens but the teacher takes at most 8 positions.*seq_len"):
        trainer(tmp_path).fit(module, datamodule=_data(root, tmp_path, str(student_dir), str(teacher_dir)))


def test_a_lora_student_of_another_vocabulary_trains_its_adapters_only(root, folders, tmp_path):
    pytest.importorskip("peft")
    from lightning_kd.models import lora

    teacher_dir, student_dir = folders
    student = lora(pretrained_lm(str(student_dir)), r=4)
    frozen = {n: p.clone() for n, p in student.named_parameters() if not p.requires_grad}
    adapters = {n: p.clone() for n, p in student.named_parameters() if p.requires_grad}
    assert frozen and adapters and all("lora_" in n for n in adapters)
    module = CrossTokenizerDistillation(pretrained_lm(str(teacher_dir)), student, alpha=0.5, chunk_size=8)
    trainer(tmp_path, max_steps=2).fit(module, datamodule=_data(root, tmp_path, str(student_dir), str(teacher_dir)))
    after = dict(student.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in frozen.items())  # the base weights stay as loaded
    assert any(not torch.equal(after[n], p) for n, p in adapters.items())  # the adapters learned
