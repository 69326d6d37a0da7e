"""An LM teacher store is checked when it is opened: damaged, edited or foreign files are refused naming the file,
what is wrong and the fix; a store with its build's sha256 is hashed, not scanned; one without is scanned."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from lightning_kd.cache import lm_store as lm_store_module  # noqa: E402
from lightning_kd.cache.lm_build import build_lm_store  # noqa: E402
from lightning_kd.cache.lm_store import LMTeacherStore  # noqa: E402
from lightning_kd.data.text import PackedTextDataModule  # noqa: E402
from tests.lm_helpers import V, tiny, write_corpus  # noqa: E402

REBUILD = "rebuild it: lightning-kd cache-lm --config <the recipe's configs> --overwrite"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_store")
    dm = PackedTextDataModule(
        text_dir=str(write_corpus(root / "corpus")), pattern="*.py", vocab_size=V, val_fraction=0.3,
        cache_dir=str(root / "cache"), seq_len=16, batch_size=4, with_indices=True,
    )  # fmt: skip
    dm.setup()
    return build_lm_store(tiny(1), dm, root / "store", k=8, device="cpu")


@pytest.fixture
def store(built, tmp_path):
    """A fresh copy of the built store to damage."""
    copy = tmp_path / "store"
    copy.mkdir()
    for f in built.path.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    return copy


def _edit(folder, name, change, keep_sha=False):
    """Change array ``name`` in place (its sha256 left as recorded unless the meta is rewritten)."""
    a = np.load(folder / f"{name}.npy")
    change(a)
    np.save(folder / f"{name}.npy", a)
    if keep_sha:  # a store written by another tool: no sha256 to compare
        meta = json.loads((folder / "meta.json").read_text())
        meta.pop("sha256")
        (folder / "meta.json").write_text(json.dumps(meta))


def test_a_finished_store_records_its_sha256_and_opens(built):
    meta = json.loads((built.path / "meta.json").read_text())
    assert sorted(meta["sha256"]) == ["done", "ids", "logprobs"] and all(len(v) == 64 for v in meta["sha256"].values())
    assert LMTeacherStore.open(built.path).meta["complete"]


def test_a_flipped_bit_is_refused_by_its_sha256(store):
    data = bytearray((store / "logprobs.npy").read_bytes())
    data[-3] ^= 0x01  # one bit of one fp16 log-probability: still a plausible value
    (store / "logprobs.npy").write_bytes(bytes(data))
    with pytest.raises(ValueError) as err:
        LMTeacherStore.open(store)
    assert str(err.value) == (
        f"LM teacher store {str(store)!r}: logprobs.npy changed since the build finished (sha256 differs from the one "
        f"in meta.json): edited or damaged (a copy cut short, a disk error); {REBUILD}."
    )


@pytest.mark.parametrize("recorded", [True, False], ids=["with sha256", "written elsewhere"])
def test_nan_rows_are_named_with_their_sequence(store, recorded):
    _edit(store, "logprobs", lambda a: a.__setitem__((5, 3), np.nan), keep_sha=not recorded)
    with pytest.raises(ValueError, match=r"holds 8 NaN or inf log-probabilities \(first in sequence 5\)"):
        LMTeacherStore.open(store)


def test_probabilities_stored_for_log_probabilities_are_named_as_such(store):
    _edit(store, "logprobs", lambda a: a.__setitem__(Ellipsis, np.exp(a.astype(np.float32))), keep_sha=True)
    with pytest.raises(ValueError) as err:
        LMTeacherStore.open(store)
    assert "log-probabilities above 0 (a log-probability is <= 0) (first in sequence 0)" in str(err.value)
    assert "probabilities were stored where log-probabilities belong (log_softmax, not softmax)" in str(err.value)


def test_token_ids_outside_the_vocabulary_are_refused(store):
    _edit(store, "ids", lambda a: a.__setitem__((2, 0, 0), V + 7), keep_sha=True)
    with pytest.raises(ValueError, match=rf"holds 1 token ids outside 0..{V - 1} \(first in sequence 2\)"):
        LMTeacherStore.open(store)


def test_a_truncated_array_names_the_file(store):
    data = (store / "ids.npy").read_bytes()
    (store / "ids.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as err:
        LMTeacherStore.open(store)
    assert str(err.value).startswith(f"LM teacher store file {str(store / 'ids.npy')!r} is truncated or corrupted")
    assert str(err.value).endswith(f"was expected; {REBUILD}.")


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"format": "lightning-kd-lm-topk", "k": 8,', "is not valid JSON"),
        ("[1, 2]", "holds a list, not an object"),
        ('{"format": "lightning-kd-lm-topk", "complete": true}', "lacks num_sequences, seq_len, k"),
    ],
)
def test_a_broken_meta_json_names_the_file(store, text, problem):
    (store / "meta.json").write_text(text)
    with pytest.raises(ValueError) as err:
        LMTeacherStore.open(store)
    assert str(err.value).startswith(f"LM teacher store file {str(store / 'meta.json')!r}")
    assert problem in str(err.value) and REBUILD in str(err.value)


def test_an_array_of_another_shape_is_refused(store):
    np.save(store / "done.npy", np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match=r"holds shape \(3,\) of bool, but shape \(\d+,\) of bool \(from meta.json\)"):
        LMTeacherStore.open(store)


def test_the_values_are_scanned_only_without_a_matching_sha256(store, monkeypatch):
    scans = []
    scan = lm_store_module.refuse_bad_lm_values
    monkeypatch.setattr(lm_store_module, "refuse_bad_lm_values", lambda *a: scans.append(1) or scan(*a))
    LMTeacherStore.open(store)
    assert scans == []
    _edit(store, "done", lambda a: None, keep_sha=True)  # an older build: no sha256 recorded
    LMTeacherStore.open(store)
    assert scans == [1]


def test_a_nan_teacher_is_refused_while_building(built, tmp_path):
    import torch

    writer = LMTeacherStore.create(tmp_path / "s", num_sequences=4, seq_len=3, k=2, temperature=1.0, vocab_size=V)
    logprobs = torch.full((2, 3, 2), -1.0)
    logprobs[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"log-probabilities of 1 sequence\(s\) \(e.g. \[3\]\) are NaN or inf"):
        writer.write(torch.tensor([2, 3]), logprobs, torch.zeros(2, 3, 2, dtype=torch.long))
