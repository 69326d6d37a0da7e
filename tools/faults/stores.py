"""Faults in what runs write and later runs read: offline LM stores and teacher caches opened with damaged or
foreign files, published models and saved model folders changed since they were written (their sha256)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tools.faults.harness import Case, fault
from tools.faults.setups import Trigger, digits, healthy, recipe, student_net, teacher_net, trainer
from tools.faults.text import _corpus, _packed


def _lm_store(c: Case) -> tuple[Any, Path]:
    """A packed-text data module and the LM store a tiny teacher built on it (k = 8)."""
    from lightning_kd.cache.lm_build import build_lm_store
    from lightning_kd.models import llama_lm

    data = _packed(text_dir=str(_corpus()), with_indices=True)
    data.setup()
    teacher = llama_lm(300, hidden_size=16, num_layers=1, num_heads=2, max_position=32, seed=1)
    build_lm_store(teacher, data, "store", k=8, device="cpu")
    return data, Path("store")


def _open_store(data: Any) -> Trigger:
    from lightning_kd.cache.lm_teacher import CachedLMTeacher

    return lambda: CachedLMTeacher("store").prepare_fit(data)  # what a fit does when it starts


def _rewrite(store: Path, name: str, change: Any, drop_record: bool = True) -> None:
    """Change ``name``.npy as another tool would write it (the build's sha256 record removed: a foreign store)."""
    a = np.load(store / f"{name}.npy")
    change(a)
    np.save(store / f"{name}.npy", a)
    if drop_record:
        meta = json.loads((store / "meta.json").read_text())
        meta.pop("sha256", None)
        (store / "meta.json").write_text(json.dumps(meta))


@fault("stores", r"holds 16 NaN or inf log-probabilities \(first in sequence 2\).*cache-lm", bad=("NaN", "sequence 2"))
def lm_store_nan_rows(c: Case) -> Trigger:
    """an LM store with NaN rows (written by another tool: no sha256 recorded)"""
    data, store = _lm_store(c)
    _rewrite(store, "logprobs", lambda a: a.__setitem__((2, slice(0, 2)), np.nan))
    return _open_store(data)


@fault(
    "stores",
    r"probabilities were stored where log-probabilities belong \(log_softmax, not softmax\)",
    bad=("log-probabilities", "softmax"),
)
def lm_store_probabilities_for_log_probabilities(c: Case) -> Trigger:
    """an LM store holding probabilities where log-probabilities belong"""
    data, store = _lm_store(c)
    _rewrite(store, "logprobs", lambda a: a.__setitem__(Ellipsis, np.exp(a.astype(np.float32))))
    return _open_store(data)


@fault("stores", r"holds 1 token ids outside 0\.\.299 \(first in sequence 4\)", bad=("token ids", "299"))
def lm_store_ids_beyond_the_vocabulary(c: Case) -> Trigger:
    """an LM store with a token id >= the vocabulary size"""
    data, store = _lm_store(c)
    _rewrite(store, "ids", lambda a: a.__setitem__((4, 1, 0), 300))
    return _open_store(data)


@fault("stores", r"store/ids\.npy' is truncated or corrupted .*cache-lm .*--overwrite", bad=("ids.npy", "truncated"))
def lm_store_truncated_array(c: Case) -> Trigger:
    """an LM store whose ids.npy was cut short (a copy interrupted)"""
    data, store = _lm_store(c)
    raw = (store / "ids.npy").read_bytes()
    (store / "ids.npy").write_bytes(raw[: len(raw) // 3])
    return _open_store(data)


@fault("stores", r"store/meta\.json' is not valid JSON .*cache-lm .*--overwrite", bad=("meta.json", "JSON"))
def lm_store_broken_meta(c: Case) -> Trigger:
    """an LM store whose meta.json was cut short"""
    data, store = _lm_store(c)
    text = (store / "meta.json").read_text()
    (store / "meta.json").write_text(text[: len(text) // 2])
    return _open_store(data)


@fault("stores", r"logprobs\.npy changed since the build finished \(sha256 differs", bad=("logprobs.npy", "sha256"))
def lm_store_flipped_bit(c: Case) -> Trigger:
    """one flipped bit in an LM store (a plausible value: nothing else would notice)"""
    data, store = _lm_store(c)
    raw = bytearray((store / "logprobs.npy").read_bytes())
    raw[-5] ^= 0x01
    (store / "logprobs.npy").write_bytes(bytes(raw))
    return _open_store(data)


@fault("stores", r"logits\.npy changed since the build finished \(sha256 differs", bad=("logits.npy", "sha256"))
def teacher_cache_flipped_bit(c: Case) -> Trigger:
    """one flipped bit in an image teacher cache"""
    from lightning_kd import CachedTeacher, DistillationModule
    from lightning_kd.cache.build import build_teacher_cache

    build_teacher_cache(teacher_net(), digits(with_indices=True), "cache", epochs=1, device="cpu")
    raw = bytearray(Path("cache/logits.npy").read_bytes())
    raw[-7] ^= 0x02
    Path("cache/logits.npy").write_bytes(bytes(raw))

    def trigger() -> Any:
        module = DistillationModule(CachedTeacher("cache", model=teacher_net()), student_net())
        trainer(max_epochs=1).fit(module, digits(with_indices=True))

    return trigger


@fault(
    "stores",
    r"teacher_ckpt 'runs/teacher/model\.ckpt' is not the file that was published.*Re-copy it.*model\.ckpt\.sha256",
    bad=("model.ckpt", "sha256"),
)
def published_model_flipped_bit(c: Case) -> Trigger:
    """one flipped bit in a published teacher's weights, then a KD run reads it"""
    published = healthy(c, "teacher")
    with zipfile.ZipFile(published) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(published.read_bytes())
    raw[info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2] ^= 0x04
    published.write_bytes(bytes(raw))
    args = [a for a in recipe(c) if not a.startswith("--model.init_args.teacher_ckpt=")]
    return lambda: c.cli("fit", *args, f"--model.init_args.teacher_ckpt={published}")


@fault(
    "stores",
    r"the student's model folder '.*saved' is not the folder that was saved \(changed or damaged: config\.json",
    bad=("config.json", "SHA256SUMS"),
)
def saved_model_folder_changed(c: Case) -> Trigger:
    """a saved language-model folder edited since (its config.json), then distilled from"""
    from lightning_kd.callbacks.lm_export import save_language_model
    from lightning_kd.models import llama_lm, pretrained_lm
    from lightning_kd.modules.causal_lm import CausalLMDistillation

    save_language_model(llama_lm(300, hidden_size=16, num_layers=1, num_heads=2, max_position=32, seed=2), "saved")
    config = json.loads(Path("saved/config.json").read_text())
    config["rms_norm_eps"] = 1e-3
    Path("saved/config.json").write_text(json.dumps(config))
    data = _packed(text_dir=str(_corpus()))

    def trigger() -> Any:
        teacher = llama_lm(300, hidden_size=16, num_layers=1, num_heads=2, max_position=32, seed=1)
        module = CausalLMDistillation(teacher, pretrained_lm("saved"))
        trainer(max_steps=1).fit(module, data)

    return trigger
