"""The family matrix: tiny random models of 12 ``transformers`` families, saved as users' model folders beside a
tokenizer in the family's special-token style, distilled teacher → student from those folders on text encoded by
their own tokenizer — chunked heads and full logits — and the saved student loads and generates with ``Auto*``
alone."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from lightning_kd.callbacks import SaveLanguageModel  # noqa: E402
from lightning_kd.core.lm import UnsupportedHeadError  # noqa: E402
from lightning_kd.data.text import PackedTextDataModule  # noqa: E402
from lightning_kd.models import pretrained_lm  # noqa: E402
from lightning_kd.modules.causal_lm import CausalLMDistillation  # noqa: E402
from tests.lm_families import FAMILIES, family_tokenizer, model_folder  # noqa: E402
from tests.lm_helpers import trainer, write_corpus  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


def _pair(root, family, tok=None, teacher_family=None, vocab_pad=0):
    style = FAMILIES[family]
    tok = tok if tok is not None else family_tokenizer(style, root / "corpus")
    teacher = model_folder(root, teacher_family or family, 1, width=48, layers=2, vocab_pad=vocab_pad, tok=tok)
    student = model_folder(root, family, 2, tok=tok)
    return teacher, student


def _data(root, tmp_path, tokenizer) -> PackedTextDataModule:
    corpus = root / "corpus"
    if not corpus.is_dir():
        write_corpus(corpus)
    return PackedTextDataModule(
        text_dir=str(corpus), pattern="*.py", tokenizer=tokenizer, seq_len=16, batch_size=4, val_fraction=0.3,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_distils_from_its_folders_and_saves_a_folder_auto_loads(root, tmp_path, family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher_dir, student_dir = _pair(root, family)
    dm = _data(root, tmp_path, str(student_dir))
    assert dm.vocab_fingerprint == _data(root, tmp_path, str(teacher_dir)).vocab_fingerprint  # one tokenizer
    for chunk in (256, None):
        if family == "gemma2" and chunk:  # Gemma 2 soft-caps its logits: only full logits reproduce them
            with pytest.raises(UnsupportedHeadError, match="soft-caps the logits.*set chunk_size: null"):
                CausalLMDistillation(pretrained_lm(teacher_dir), pretrained_lm(student_dir), chunk_size=chunk)
            continue
        teacher, student = pretrained_lm(teacher_dir), pretrained_lm(student_dir)
        before = {k: v.clone() for k, v in teacher.state_dict().items()}
        start = {k: v.clone() for k, v in student.state_dict().items()}
        module = CausalLMDistillation(teacher, student, chunk_size=chunk, alpha=0.5)
        saver = SaveLanguageModel(folder=str(tmp_path / f"saved-{chunk}"), num_samples=1, max_new_tokens=3)
        t = trainer(
            tmp_path / f"run-{chunk}",
            max_steps=2,
            limit_val_batches=1,
            callbacks=[saver],
            log_every_n_steps=1,
            val_check_interval=2,
        )
        t.fit(module, dm)
        assert torch.isfinite(t.callback_metrics["train/loss"]) and torch.isfinite(t.callback_metrics["val/kd"])
        assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
        assert any(not torch.equal(start[k], v) for k, v in student.state_dict().items())
    folder = saver.saved
    loaded, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert tok("def alpha_1(x):")["input_ids"] == dm.tokenizer("def alpha_1(x):")["input_ids"]
    out = loaded.generate(**tok("def alpha", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] >= 3


def test_a_cross_family_pair_sharing_a_tokenizer_and_a_padded_teacher_head(root, tmp_path):
    """A Qwen 2 teacher whose head is padded 8 rows past the tokenizer, a Llama student, one tokenizer: the loss
    compares the tokenizer's ids only."""
    tok = family_tokenizer("qwen", root / "corpus")
    teacher_dir, student_dir = _pair(root, "llama", tok=tok, teacher_family="qwen2", vocab_pad=8)
    dm = _data(root, tmp_path, str(student_dir))
    module = CausalLMDistillation(pretrained_lm(teacher_dir), pretrained_lm(student_dir), alpha=0.5)
    t = trainer(tmp_path, max_steps=2, limit_val_batches=1, log_every_n_steps=1, val_check_interval=2)
    t.fit(module, dm)
    assert module.loss_vocab_size == len(tok) and module.teacher.num_classes == len(tok) + 8
    assert torch.isfinite(t.callback_metrics["val/kd"])


def test_data_encoded_with_another_tokenizer_than_the_models_is_refused_naming_both(root, tmp_path):
    teacher_dir, student_dir = _pair(root, "llama")
    other = family_tokenizer("gpt2", root / "corpus")  # same corpus and size, another vocabulary
    dm = _data(root, tmp_path, other)
    module = CausalLMDistillation(pretrained_lm(teacher_dir), pretrained_lm(student_dir), alpha=0.5)
    with pytest.raises(ValueError, match=r"vocabulary \(the tokenizer in .*llama.*\) is not the data's .*tokenizer: "):
        trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(module, dm)
