"""The offline causal-LM teacher: top-k rebuild, k = V equals the live teacher, refusals, the cache-lm command."""

from __future__ import annotations

import json
import os

import lightning as L
import pytest
import torch
import yaml

pytest.importorskip("transformers")

from lightning_kd.apps.cache_lm import main as cache_lm_main  # noqa: E402
from lightning_kd.cache.lm_build import build_lm_store  # noqa: E402
from lightning_kd.cache.lm_store import LMTeacherStore, topk_logprobs  # noqa: E402
from lightning_kd.cache.lm_teacher import CachedLMTeacher  # noqa: E402
from lightning_kd.data.text import PackedTextDataModule  # noqa: E402
from lightning_kd.losses.token import decode_lm_topk  # noqa: E402
from lightning_kd.modules.causal_lm import CausalLMDistillation  # noqa: E402
from tests.lm_helpers import V, tiny, write_corpus  # noqa: E402


def make_dm(tmp_path, with_indices=True, **kw) -> PackedTextDataModule:
    corpus = write_corpus(tmp_path / "corpus")
    args = dict(text_dir=str(corpus), pattern="*.py", vocab_size=V, val_fraction=0.3, seq_len=16, batch_size=4)
    return PackedTextDataModule(cache_dir=str(tmp_path / "cache"), with_indices=with_indices, **{**args, **kw})


def fit(module, dm, tmp_path, steps=2):
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0, limit_val_batches=1,
        log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(module, dm)
    return trainer


def sgd(params):
    return torch.optim.SGD(params, lr=0.5)


def test_rebuilt_distribution_keeps_the_top_k_and_spreads_the_rest():
    torch.manual_seed(0)
    logits, t, k = torch.randn(2, 3, 50) * 3, 2.0, 8
    p = torch.softmax(logits / t, -1)
    values, ids = topk_logprobs(logits, k, t)
    assert torch.equal(ids, p.topk(k, -1).indices)
    q = torch.softmax(decode_lm_topk(values, ids, 50), -1)
    torch.testing.assert_close(q.gather(-1, ids), p.gather(-1, ids))  # the kept probabilities, exactly
    tail_mask = torch.ones_like(p, dtype=torch.bool).scatter_(-1, ids, False)
    rest = 1 - p.gather(-1, ids).sum(-1)
    tail = q[tail_mask].reshape(2, 3, 42)
    torch.testing.assert_close(tail, (rest / 42).unsqueeze(-1).expand(2, 3, 42))  # uniform, the right mass
    # k = V: the whole distribution
    values, ids = topk_logprobs(logits, 50, t)
    torch.testing.assert_close(torch.softmax(decode_lm_topk(values, ids, 50), -1), p)
    with pytest.raises(ValueError, match=r"k must be in \[1, vocab size 50\], got 51"):
        topk_logprobs(logits, 51)


@pytest.mark.parametrize("divergence", ["forward_kl", "jsd"])
@pytest.mark.parametrize("tail", ["bucket", "uniform"])
def test_k_equal_v_trains_exactly_like_the_live_teacher(tmp_path, divergence, tail):
    dm = make_dm(tmp_path)
    dm.setup()
    teacher = tiny(1)
    store = build_lm_store(teacher, dm, tmp_path / "store", k=dm.vocab_size, temperature=2.0, dtype="fp32")
    assert store.meta["complete"] and store.arrays["ids"].shape == (len(dm.splits["train"]), 16, dm.vocab_size)
    common = dict(student=tiny(2), chunk_size=None, temperature=2.0, alpha=0.5, divergence=divergence, optimizer=sgd)
    live = CausalLMDistillation(teacher=tiny(1), **common)
    common["student"] = tiny(2)
    cached_teacher = CachedLMTeacher(str(tmp_path / "store"), model=tiny(1), tail=tail)
    cached = CausalLMDistillation(teacher=cached_teacher, **common)
    fit(live, dm, tmp_path / "a")
    fit(cached, make_dm(tmp_path), tmp_path / "b")
    moved = [not torch.equal(a, b) for a, b in zip(live.student.parameters(), tiny(2).parameters())]
    assert all(moved)
    for (name, a), b in zip(live.student.named_parameters(), cached.student.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_small_k_and_fp16_stay_close_and_say_their_size(tmp_path):
    dm = make_dm(tmp_path)
    dm.setup()
    store = build_lm_store(tiny(1), dm, tmp_path / "store", k=16, temperature=1.0)
    assert store.bytes_per_token == 16 * 2 + 16 * 4
    assert os.path.getsize(tmp_path / "store" / "logprobs.npy") >= len(dm.splits["train"]) * 16 * 16 * 2
    module = CausalLMDistillation(
        teacher=CachedLMTeacher(str(tmp_path / "store"), model=tiny(1)), student=tiny(2), chunk_size=None, alpha=1.0
    )
    trainer = fit(module, dm, tmp_path / "run", steps=3)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    metrics = trainer.validate(module, dm, verbose=False)[0]
    assert metrics["val/teacher_loss"] > 0 and 0 <= metrics["val/agreement"] <= 1  # the live model serves validation


def test_a_store_that_does_not_match_is_refused_naming_the_difference(tmp_path):
    dm = make_dm(tmp_path)
    dm.setup()
    build_lm_store(tiny(1), dm, tmp_path / "store", k=8, temperature=1.0)
    path = str(tmp_path / "store")

    def start(teacher_model=None, temperature=1.0, **dm_kw):
        module = CausalLMDistillation(
            teacher=CachedLMTeacher(path, model=teacher_model), student=tiny(2), chunk_size=None,
            temperature=temperature,
        )  # fmt: skip
        fit(module, make_dm(tmp_path, **dm_kw), tmp_path / "run", steps=1)

    with pytest.raises(ValueError, match=r"data_fingerprint: .*rebuild the store"):
        start(max_train_tokens=200)
    with pytest.raises(ValueError, match=r"teacher_fingerprint: .*teacher's weights changed"):
        start(teacher_model=tiny(5))
    with pytest.raises(ValueError, match=r"temperature: store 1.0, this run 2.0"):
        start(temperature=2.0)
    with pytest.raises(ValueError, match=r"set with_indices: true on the data module"):
        start(with_indices=False)
    with pytest.raises(ValueError, match=r"kind: store 'topk', this run .*'sampled' \(set the CachedLMTeacher's kind"):
        module = CausalLMDistillation(teacher=CachedLMTeacher(path, kind="sampled"), student=tiny(2), chunk_size=None)
        fit(module, make_dm(tmp_path), tmp_path / "run", steps=1)
    start(teacher_model=tiny(1))  # the matching run trains


def test_a_store_is_never_overwritten_unasked_and_an_interrupted_build_resumes(tmp_path):
    dm = make_dm(tmp_path)
    dm.setup()
    out = tmp_path / "store"
    build_lm_store(tiny(1), dm, out, k=8)
    before = (out / "meta.json").read_text(), (out / "logprobs.npy").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a finished store; it is kept. Pass --overwrite"):
        build_lm_store(tiny(3), dm, out, k=8)
    assert ((out / "meta.json").read_text(), (out / "logprobs.npy").read_bytes()) == before
    # a build that stopped half-way: refused when used, finished by running the build again
    half = tmp_path / "half"
    store = LMTeacherStore.create(
        half, num_sequences=len(dm.splits["train"]), seq_len=16, k=8, temperature=1.0, vocab_size=dm.vocab_size,
        **{k: store_meta for k, store_meta in json.loads(before[0]).items() if k.endswith("fingerprint")},
    )  # fmt: skip
    first = torch.arange(2)
    tokens = torch.as_tensor(dm.splits["train"].ids[:2].astype("int64"))
    with torch.no_grad():
        store.write(first, *topk_logprobs(tiny(1)(input_ids=tokens).logits[..., : dm.vocab_size], 8))
    with pytest.raises(ValueError, match="the build stopped before the end"):
        LMTeacherStore.open(half)
    resumed = build_lm_store(tiny(1), dm, half, k=8)
    assert resumed.meta["complete"]
    full = LMTeacherStore.open(out)
    torch.testing.assert_close(resumed.lookup(torch.arange(4))[0], full.lookup(torch.arange(4))[0])


def write_lm_recipe(tmp_path, teacher_init_args: dict):
    """A recipe file: CausalLMDistillation of a tiny Llama from a CachedLMTeacher at ``tmp_path/store`` (with
    ``teacher_init_args``), on the test corpus with sequence indices; two steps."""
    corpus = write_corpus(tmp_path / "corpus")
    recipe = {
        "seed_everything": 0,
        "trainer": {"max_steps": 2, "accelerator": "cpu", "logger": False, "limit_val_batches": 1,
                    "default_root_dir": str(tmp_path / "run"), "enable_progress_bar": False},
        "model": {"class_path": "lightning_kd.modules.CausalLMDistillation", "init_args": {
            "teacher": {"class_path": "lightning_kd.CachedLMTeacher",
                        "init_args": {"path": str(tmp_path / "store"), **teacher_init_args}},
            "student": {"class_path": "lightning_kd.models.llama_lm", "init_args": {**LLAMA, "seed": 2}},
            "chunk_size": None, "temperature": 1.0}},
        "data": {"class_path": "lightning_kd.data.PackedTextDataModule", "init_args": {
            "text_dir": str(corpus), "pattern": "*.py", "vocab_size": V, "val_fraction": 0.3, "seq_len": 16,
            "batch_size": 4, "cache_dir": str(tmp_path / "cache"), "with_indices": True}},
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


LLAMA = {"vocab_size": V, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_position": 64}


def test_cache_lm_command_builds_from_the_recipe_and_fit_reads_it(tmp_path, capsys, monkeypatch):
    path = write_lm_recipe(
        tmp_path, {"model": {"class_path": "lightning_kd.models.llama_lm", "init_args": {**LLAMA, "seed": 1}}}
    )
    cache_lm_main(["--config", str(path), "--k", "8"])
    out = capsys.readouterr().out
    assert "k=8" in out and "48 bytes/token" in out  # 8 x (2 bytes fp16 + 4 bytes int32)
    assert json.loads((tmp_path / "store" / "meta.json").read_text())["complete"]
    from lightning_kd.apps.cli import main as cli_main

    cli_main(["fit", "--config", str(path)])
    assert (tmp_path / "run" / "model.ckpt").is_file()
