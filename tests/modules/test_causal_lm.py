"""Causal-LM modules: the shift, token normalisation over the optimizer step, chunked == full logits, head and
vocabulary checks, held-out sums, the teacher untouched, the transformers folder."""

from __future__ import annotations

import json
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from lightning_kd.core.lm import UnsupportedHeadError, check_head_matches  # noqa: E402
from lightning_kd.data.text import PackedTextDataModule  # noqa: E402
from lightning_kd.losses.token import TOKEN_DIVERGENCES, token_divergence  # noqa: E402
from lightning_kd.models.language import llama_lm  # noqa: E402
from lightning_kd.modules.causal_lm import CausalLMDistillation, CausalLMModule  # noqa: E402
from lightning_kd.modules.language import next_token_labels  # noqa: E402
from lightning_kd.modules.vocabulary import VOCAB_RECORD_KEY  # noqa: E402
from tests.lm_helpers import Batches, V, dict_batch, tiny, trainer, write_corpus  # noqa: E402


def test_next_token_labels_shift_once():
    labels = torch.tensor([[5, 6, 7, -100], [-100, 1, 2, 3]])
    assert next_token_labels(labels).tolist() == [[6, 7, -100, -100], [1, 2, 3, -100]]
    with pytest.raises(ValueError, match="batch, sequence"):
        next_token_labels(torch.tensor([1, 2]))


def test_dict_batches_without_labels_mask_padding():
    module = CausalLMModule(tiny(0))
    batch = module.unpack_batch({"input_ids": torch.tensor([[4, 5, 0]]), "attention_mask": torch.tensor([[1, 1, 0]])})
    assert batch.targets.tolist() == [[4, 5, -100]]
    with pytest.raises(ValueError, match="dict batches with 'input_ids'"):
        module.unpack_batch((torch.zeros(2, 3), torch.zeros(2)))


def _distill(chunk_size, kind="forward_kl", temperature=1.0, **kwargs) -> CausalLMDistillation:
    return CausalLMDistillation(
        tiny(1, hidden=48), tiny(2), chunk_size=chunk_size, divergence=kind, temperature=temperature,
        alpha=0.7, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("kind", TOKEN_DIVERGENCES)
def test_chunked_step_equals_full_logits_step(kind):
    """Same loss and student gradients from hidden states in chunks as from the models' full logits (mask, T≠1)."""
    g = torch.Generator().manual_seed(0)
    batch = dict_batch(torch.randint(0, V, (3, 11), generator=g).tolist(), [0, 4, 9])
    grads, losses = [], []
    for chunk in (5, None):
        module = _distill(chunk, kind, temperature=2.0)
        loss = module.training_step(batch, 0)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.reshape(-1) for p in module.student.parameters() if p.grad is not None]))
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_training_loss_is_the_formula_worked_out_by_hand():
    g = torch.Generator().manual_seed(1)
    batch = dict_batch(torch.randint(0, V, (2, 9), generator=g).tolist(), [3, 0])
    module = _distill(None, "reverse_kl", temperature=2.0)
    loss = module.training_step(batch, 0)
    with torch.no_grad():
        s = module.student(input_ids=batch["input_ids"]).logits[:, :-1].reshape(-1, V)
        t = module.teacher.model(input_ids=batch["input_ids"]).logits[:, :-1].reshape(-1, V)
    y = batch["labels"][:, 1:].reshape(-1)
    valid = y != -100
    ce = F.cross_entropy(s[valid], y[valid])
    log_ps, log_pt = F.log_softmax(s[valid] / 2, -1), F.log_softmax(t[valid] / 2, -1)
    reverse_kl = (log_ps.exp() * (log_ps - log_pt)).sum(-1).mean() * 4  # T² = 4
    torch.testing.assert_close(loss, 0.3 * ce + 0.7 * reverse_kl, atol=1e-5, rtol=1e-5)


def _one_step(batches, accumulate, tmp_path, devices=1) -> dict[str, torch.Tensor]:
    module = CausalLMModule(tiny(3), optimizer=partial(torch.optim.SGD, lr=1.0))
    t = trainer(tmp_path, max_steps=1, accumulate_grad_batches=accumulate, limit_val_batches=0)
    t.fit(module, Batches(batches))
    return {k: v.clone() for k, v in module.model.state_dict().items()}


def test_gradient_accumulation_normalises_by_all_tokens_of_the_step(tmp_path):
    """Two micro-batches with 22 and 3 valid tokens accumulate to the update of the one batch holding both."""
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, V, (4, 12), generator=g).tolist()
    b1, b2 = dict_batch(ids[:2], [1, 1]), dict_batch(ids[2:], [10, 11])  # 22 and 3 valid next tokens
    merged = {k: torch.cat([b1[k], b2[k]]) for k in b1}
    accumulated = _one_step([b1, b2], 2, tmp_path / "a")
    whole = _one_step([merged], 1, tmp_path / "b")
    for key in whole:
        torch.testing.assert_close(accumulated[key], whole[key], atol=1e-6, rtol=1e-5)
    # what per-micro-batch means would have given (trl #4719) is measurably different
    module = CausalLMModule(tiny(3))
    start = {k: v.clone() for k, v in module.model.state_dict().items()}
    for b in (b1, b2):
        (module.training_step(b, 0) / 2).backward()
    naive = {n: start[n] - p.grad for n, p in module.model.named_parameters()}
    assert max((naive[k] - whole[k]).abs().max().item() for k in naive) > 1e-4


def test_chunked_plain_lm_equals_full_logits():
    g = torch.Generator().manual_seed(3)
    batch = dict_batch(torch.randint(0, V, (2, 10), generator=g).tolist(), [2, 5])
    losses = []
    for chunk in (3, None):
        module = CausalLMModule(tiny(4), chunk_size=chunk)
        losses.append(module.training_step(batch, 0))
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)


def test_a_soft_capped_head_is_refused_by_name_and_full_logits_work():
    transformers = pytest.importorskip("transformers")
    config = transformers.Gemma2Config(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, final_logit_softcapping=30.0,
    )  # fmt: skip
    gemma = transformers.Gemma2ForCausalLM(config)
    with pytest.raises(
        UnsupportedHeadError, match=r"soft-caps the logits.*final_logit_softcapping=30.0.*chunk_size: null"
    ):
        CausalLMDistillation(tiny(1), gemma, chunk_size=64)
    module = CausalLMDistillation(tiny(1), gemma, chunk_size=None)
    batch = dict_batch([[1, 2, 3, 4, 5]], [0])
    assert torch.isfinite(module.training_step(batch, 0))


def test_a_head_that_does_not_reproduce_the_logits_is_caught_on_a_batch():
    model = tiny(5)
    forward = model.forward

    def scaled(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = out.logits * 3.0  # what an unknown logit scale would do
        return out

    model.forward = scaled
    with pytest.raises(UnsupportedHeadError, match="does not reproduce.*chunk_size: null"):
        check_head_matches(model, {"input_ids": torch.tensor([[1, 2, 3]])}, "student")


def test_vocabularies_are_checked_by_identity(tmp_path, text_dm):
    """A teacher trained on another tokenizer of the same size is refused, naming both; same tokenizer passes."""
    teacher_module = CausalLMModule(tiny(1, hidden=48))
    t = trainer(tmp_path / "teacher", max_steps=1, limit_val_batches=0)
    t.fit(teacher_module, text_dm)
    ckpt = tmp_path / "teacher.ckpt"
    t.save_checkpoint(ckpt, weights_only=True)
    record = torch.load(ckpt, weights_only=True)[VOCAB_RECORD_KEY]
    assert record == {"fingerprint": text_dm.vocab_fingerprint, "size": V}
    assert not any(k.startswith("teacher") for k in torch.load(ckpt, weights_only=True)["state_dict"])

    kd = CausalLMDistillation(tiny(1, hidden=48), tiny(2), teacher_ckpt=str(ckpt))
    trainer(tmp_path / "kd", max_steps=1, limit_val_batches=0).fit(kd, text_dm)  # same tokenizer: accepted

    other = PackedTextDataModule(
        text_dir=str(write_corpus(tmp_path / "other", offset=40)), pattern="*.py", vocab_size=V, val_fraction=0.3,
        cache_dir=str(tmp_path / "cache2"), seq_len=16, batch_size=4,
    )  # fmt: skip
    assert other.vocab_size == text_dm.vocab_size and other.vocab_fingerprint != text_dm.vocab_fingerprint
    kd = CausalLMDistillation(tiny(1, hidden=48), tiny(2), teacher_ckpt=str(ckpt))
    with pytest.raises(
        ValueError, match=r"teacher's vocabulary \(teacher_ckpt.*is not the data's.*CrossTokenizerDistillation"
    ):
        trainer(tmp_path / "kd2", max_steps=1).fit(kd, other)


def test_unknown_teacher_vocabulary_is_said(tmp_path, text_dm):
    kd = CausalLMDistillation(tiny(1), tiny(2))
    with pytest.warns(UserWarning, match="cannot check that the teacher was trained with the data's tokenizer"):
        trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(kd, text_dm)


def test_padded_head_compares_the_shared_ids_only(tmp_path, text_dm):
    """A teacher head padded to 320 rows (tokenizer 300): the divergence uses the first 300 columns."""
    teacher = llama_lm(320, hidden_size=32, num_layers=1, num_heads=2, seed=1)
    kd = CausalLMDistillation(teacher, tiny(2), chunk_size=None, teacher_vocab=text_dm.vocab_fingerprint)
    trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(kd, text_dm)
    assert kd.loss_vocab_size == V
    kd.trainer = None  # called by hand: the batch's own token mean
    batch = dict_batch([[1, 2, 3, 4, 5, 6]], [0])
    loss = kd.training_step(batch, 0)
    with torch.no_grad():
        s = kd.student(input_ids=batch["input_ids"]).logits[0, :-1]
        t = teacher(input_ids=batch["input_ids"]).logits[0, :-1, :V]  # the padding ids dropped by hand
    y = batch["labels"][0, 1:]
    expected = 0.5 * F.cross_entropy(s, y) + 0.5 * token_divergence(s, t).mean()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)

    small = llama_lm(200, hidden_size=32, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match=r"teacher's lm head has 200 outputs but the tokenizer.*needs 300"):
        trainer(tmp_path, max_steps=1).fit(CausalLMDistillation(small, tiny(2), chunk_size=None), text_dm)


def test_validation_perplexity_is_exp_of_the_token_mean(tmp_path):
    """val/loss is the mean over all valid tokens of the split (not a mean of batch means); ppl = exp(loss)."""
    g = torch.Generator().manual_seed(4)
    batches = [dict_batch(torch.randint(0, V, (2, 8), generator=g).tolist(), v) for v in ([0, 0], [6, 7])]
    kd = _distill(4)
    t = trainer(tmp_path, max_steps=1, limit_val_batches=None)
    t.validate(kd, Batches(batches), verbose=False)
    m = t.callback_metrics
    ce, agree, n = 0.0, 0, 0
    with torch.no_grad():
        for b in batches:
            s = kd.student(input_ids=b["input_ids"]).logits[:, :-1].reshape(-1, V)
            te = kd.teacher.model(input_ids=b["input_ids"]).logits[:, :-1].reshape(-1, V)
            y = b["labels"][:, 1:].reshape(-1)
            keep = y != -100
            ce += F.cross_entropy(s[keep], y[keep], reduction="sum").item()
            agree += (s[keep].argmax(-1) == te[keep].argmax(-1)).sum().item()
            n += keep.sum().item()
    assert m["val/loss"].item() == pytest.approx(ce / n, rel=1e-5)
    assert m["val/ppl"].item() == pytest.approx(math.exp(ce / n), rel=1e-4)
    assert m["val/agreement"].item() == pytest.approx(agree / n)


def test_teacher_untouched_and_student_saved_as_a_transformers_folder(tmp_path, text_dm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightning_kd.callbacks import SaveLanguageModel

    teacher = tiny(1, hidden=48)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    kd = CausalLMDistillation(teacher, tiny(2), teacher_vocab=text_dm.vocab_fingerprint)
    saver = SaveLanguageModel(folder=str(tmp_path / "hf"), num_samples=2, max_new_tokens=5)
    trainer(tmp_path, max_steps=3, callbacks=[saver]).fit(kd, text_dm)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert {id(p) for g in kd.trainer.optimizers[0].param_groups for p in g["params"]} == {
        id(p) for p in kd.student.parameters()
    }
    folder = tmp_path / "hf"
    loaded, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert len(tok) == V and json.loads((folder / "config.json").read_text())["lightning_kd_vocab_fingerprint"] == (
        text_dm.vocab_fingerprint
    )
    x = torch.tensor([tok.encode("def alpha_1(x, y=1):")])
    torch.testing.assert_close(loaded(input_ids=x).logits, kd.student(input_ids=x).logits)
    assert (folder / "samples.md").read_text().count("**Continuation**") == 2

    again = SaveLanguageModel(folder=str(folder), num_samples=0)
    with pytest.warns(UserWarning, match="already holds files"):
        trainer(tmp_path, max_steps=1, callbacks=[again]).fit(CausalLMModule(tiny(2)), text_dm)
    torch.testing.assert_close(
        AutoModelForCausalLM.from_pretrained(folder)(input_ids=x).logits, loaded(input_ids=x).logits
    )


def test_hyper_parameters_are_refused_with_the_value():
    with pytest.raises(ValueError, match="unknown divergence kind='kl'"):
        CausalLMDistillation(tiny(1), tiny(2), divergence="kl")
    with pytest.raises(ValueError, match="chunk_size must be a positive int or None"):
        CausalLMDistillation(tiny(1), tiny(2), chunk_size=0)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        CausalLMDistillation(tiny(1), tiny(2), alpha=1.5)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        CausalLMDistillation(tiny(1), tiny(2), temperature=float("nan"))


def test_llama_seed_gives_the_same_init_whatever_the_global_rng():
    torch.manual_seed(0)
    a = tiny(7)
    torch.randn(1000)
    b = tiny(7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(tiny(8).lm_head.weight, a.lm_head.weight)


def test_settings_objects_reload_from_the_hyper_parameters_and_the_strategy_is_the_teachers():
    from lightning_kd.core.lm import ChunkedTokenLoss, FullLogitsTokenLoss, Generation
    from lightning_kd.losses.divergence import Divergence

    kd = CausalLMDistillation(
        tiny(1), tiny(2), divergence=Divergence("jsd", beta=0.3), generation=Generation(sequence_kd=0.5, prompt_len=4)
    )
    # a weights-only checkpoint holds plain data: the settings as dicts, which the constructor takes back
    assert kd.hparams["divergence"] == {"kind": "jsd", "beta": 0.3, "skew": 0.1}
    assert kd.hparams["generation"] == {"on_policy": 0.0, "sequence_kd": 0.5, "prompt_len": 4, "temperature": 1.0}
    again = CausalLMDistillation(
        tiny(1), tiny(2), divergence=kd.hparams["divergence"], generation=kd.hparams["generation"]
    )
    assert again.divergence == kd.divergence and again.generation == kd.generation
    # the token-loss strategy is picked once, by the teacher, from what it provides for this chunk_size
    assert type(kd.token_loss) is ChunkedTokenLoss and kd.token_loss.chunk_size == 256
    assert type(CausalLMDistillation(tiny(1), tiny(2), chunk_size=None).token_loss) is FullLogitsTokenLoss
    with pytest.raises(TypeError, match="a Teacher cannot teach a causal LM token by token"):
        from lightning_kd import Teacher

        CausalLMDistillation(Teacher(tiny(1)), tiny(2))
