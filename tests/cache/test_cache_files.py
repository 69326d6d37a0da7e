"""Unreadable or unsuitable teacher-cache files fail with a message that names them and says the fix; a finished
cache is never replaced unasked."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lightning_kd.apps import cache as cache_app
from lightning_kd.apps.cache import build_from_recipe
from lightning_kd.cache import checks as checks_module
from lightning_kd.cache import store as store_module
from lightning_kd.cache.build import build_teacher_cache
from lightning_kd.cache.store import TeacherCache
from lightning_kd.core.teacher import Teacher
from lightning_kd.data import DigitsDataModule
from tests.helpers import make_student, untouched

REBUILD = re.escape("rebuild it with `lightning-kd cache --config <recipe.yaml> --overwrite`")


# -- the teacher cache (cache/store.py) --------------------------------------------------------------------------
def _cache(path: Path, storage: str = "fp16", epochs: int = 2, n: int = 50, key: dict | None = None) -> Path:
    torch.manual_seed(0)
    k = 3 if storage == "topk" else None
    writer = TeacherCache.create(path, n, 10, epochs, key or {"augment": True}, storage=storage, k=k)
    for e in range(epochs):
        writer.write(e, torch.arange(n), torch.randn(n, 10))
    writer.finish()
    return path


def _expected_logits(storage: str = "fp16") -> str:
    return re.escape(f"shape (2, 50, 10) of {'float16' if storage == 'fp16' else 'float32'} (from meta.json)")


@pytest.mark.parametrize("cut", [0.5, 0.02], ids=["data", "header"])
def test_a_truncated_npy_is_named_with_shape_dtype_and_fix(tmp_path, cut):
    path = _cache(tmp_path / "c")
    logits = path / "logits.npy"
    data = logits.read_bytes()
    logits.write_bytes(data[: int(len(data) * cut)])
    with untouched(path), pytest.raises(ValueError) as err:
        TeacherCache.open(path)
    assert re.match(
        rf"teacher cache file {re.escape(repr(str(logits)))} is truncated or corrupted \(.+\); "
        rf"{_expected_logits()} was expected; {REBUILD}\.$",
        str(err.value),
    )


def test_a_replaced_or_missing_npy_is_named(tmp_path):
    path = _cache(tmp_path / "c", storage="fp32")
    np.save(path / "logits.npy", np.zeros((2, 49, 10), np.float32))
    with untouched(path), pytest.raises(ValueError) as err:
        TeacherCache.open(path)
    assert str(err.value).startswith(
        f"teacher cache file {str(path / 'logits.npy')!r} holds shape (2, 49, 10) of float32, but shape (2, 50, 10) "
        "of float32 (from meta.json) was expected"
    )
    np.save(path / "logits.npy", np.zeros((2, 50, 10), np.float16))
    with pytest.raises(ValueError, match=r"holds shape \(2, 50, 10\) of float16, but shape \(2, 50, 10\) of float32"):
        TeacherCache.open(path)
    (path / "logits.npy").unlink()
    with untouched(path), pytest.raises(FileNotFoundError, match=r"logits.npy' is missing \(shape \(2, 50, 10\)"):
        TeacherCache.open(path)


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"format": 1, "storage": "fp16",', r"meta\.json' is not valid JSON \(.*\): it was edited or damaged; "),
        ("[1, 2]", r"meta\.json' holds a list, not a JSON object"),
        ('{"format": 1, "storage": "fp16", "epochs": 2}', r"meta\.json' lacks num_samples, num_classes \(fields "),
    ],
    ids=["json", "list", "fields"],
)
def test_a_broken_meta_json_is_named(tmp_path, text, match):
    path = _cache(tmp_path / "c")
    (path / "meta.json").write_text(text)
    with untouched(path), pytest.raises(ValueError, match=match + r".*" + REBUILD):
        TeacherCache.open(path)


@pytest.mark.parametrize("chunk", [1 << 22, 30], ids=["one-chunk", "many-chunks"])
def test_non_finite_logits_in_a_cache_are_refused_with_their_count(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(checks_module, "_SCAN_VALUES", chunk)
    path = _cache(tmp_path / "c")
    stored = np.load(path / "logits.npy", mmap_mode="r+")
    stored[1, 7, 3], stored[1, 7, 4], stored[1, 40, 0], stored[0, 49, 9] = np.nan, np.inf, -np.inf, np.nan
    stored.flush()
    del stored
    with untouched(path), pytest.raises(ValueError) as err:
        TeacherCache.open(path)
    assert str(err.value) == (
        f"teacher cache file {str(path / 'logits.npy')!r} holds 4 NaN or inf logit(s) in 3 sample row(s) (the first: "
        "epoch 0, sample 49): it was built from a diverged teacher or damaged; check the teacher and rebuild it "
        "with `lightning-kd cache --config <recipe.yaml> --overwrite`."
    )


def test_topk_classes_out_of_range_are_refused(tmp_path):
    path = _cache(tmp_path / "c", storage="topk")
    stored = np.load(path / "topk_indices.npy", mmap_mode="r+")
    stored[1, 2, 0] = 10
    stored.flush()
    del stored
    with (
        untouched(path),
        pytest.raises(
            ValueError,
            match=r"topk_indices\.npy' holds 1 top-k class\(es\) outside 0\.\.9 "
            r"in 1 sample row\(s\) \(the first: epoch 1, sample 2\)",
        ),
    ):
        TeacherCache.open(path)


def test_the_files_are_read_once_per_open_sha256_or_scan(tmp_path, monkeypatch):
    """A cache with its build's sha256 is hashed once per open (no scan); one without (an older build) scanned once;
    lookups read neither."""
    import json

    path = _cache(tmp_path / "c")
    hashed, scanned = [], []
    digest, scan = store_module.file_sha256, store_module.refuse_bad_values
    monkeypatch.setattr(store_module, "file_sha256", lambda p: hashed.append(p) or digest(p))
    monkeypatch.setattr(store_module, "refuse_bad_values", lambda *a: scanned.append(a[0]) or scan(*a))
    cache = TeacherCache.open(path)
    for _ in range(3):
        cache.lookup(1, torch.arange(5))
    cache.to("cpu").lookup(0, torch.arange(5))
    assert hashed == [path / "logits.npy"] and scanned == []
    meta = json.loads((path / "meta.json").read_text())
    del meta["sha256"]
    (path / "meta.json").write_text(json.dumps(meta))
    hashed.clear()
    TeacherCache.open(path).lookup(0, torch.arange(5))
    assert scanned == [path / "logits.npy"]


@pytest.mark.parametrize("storage", ["fp32", "fp16", "topk"])
def test_writing_non_finite_teacher_logits_is_refused(tmp_path, storage):
    writer = TeacherCache.create(tmp_path / "c", 8, 10, 1, {"augment": False}, storage=storage, k=3)
    logits = torch.randn(4, 10)
    logits[2, 5] = float("nan")
    logits[3, 0] = float("inf")
    with pytest.raises(ValueError) as err:
        writer.write(0, torch.arange(4, 8), logits)
    assert str(err.value).startswith(
        f"the teacher's logits of 2 sample(s) in epoch 0 (indices [6, 7]) are NaN or inf, so teacher cache "
        f"{str(tmp_path / 'c')!r} was not finished: the teacher diverged"
    )
    with pytest.raises(FileNotFoundError, match="is an unfinished build"):
        TeacherCache.open(tmp_path / "c")
    if storage == "fp16":  # finite but too large for fp16 keeps its own message
        with pytest.raises(ValueError, match=r"overflow fp16 .*storage='fp32' \(--storage fp32\)"):
            writer.write(0, torch.arange(1), torch.full((1, 10), 1e6))


# -- replacing a finished cache (cache/store.py, cache/build.py) ------------------------------------------------
def _digits() -> DigitsDataModule:
    return DigitsDataModule(batch_size=64, with_indices=True)


def _teacher(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return make_student()  # an MLP on 8×8 digits: as good a teacher as any for these tests


def test_a_finished_cache_for_something_else_is_not_replaced(tmp_path):
    path = tmp_path / "c"
    build_teacher_cache(_teacher(0), _digits(), path, epochs=1, device="cpu")
    (path / "README").write_text("mine")
    with untouched(path), pytest.raises(FileExistsError) as err:
        build_teacher_cache(_teacher(1), _digits(), path, epochs=1, device="cpu")
    assert re.match(
        rf"teacher cache folder {re.escape(repr(str(path)))} already holds a finished cache built for something "
        r"else \(teacher weights \(sha256 of its state_dict\): cache '[0-9a-f]+', new build '[0-9a-f]+'\); pass "
        r"overwrite=True \(`lightning-kd cache \.\.\. --overwrite`\) to replace it, or build into another folder\.$",
        str(err.value),
    )
    with untouched(path), pytest.raises(FileExistsError, match=r"number of training samples: cache 1258, new "):
        build_teacher_cache(_teacher(0), DigitsDataModule(with_indices=True, test_fraction=0.3), path, 1, device="cpu")
    old_teacher = json.loads((path / "meta.json").read_text())["teacher"]
    new = build_teacher_cache(_teacher(1), _digits(), path, epochs=1, device="cpu", overwrite=True)
    assert new.meta["teacher"] != old_teacher
    assert (path / "README").read_text() == "mine"  # only the cache's own files are replaced
    dm = _digits()
    dm.setup()
    with torch.no_grad():
        live = _teacher(1).eval()(dm.splits["train"].images[:3])
    torch.testing.assert_close(new.lookup(0, torch.arange(3)), live, atol=2e-3, rtol=2e-3)


def test_a_rebuild_of_the_same_key_or_an_unfinished_build_is_allowed(tmp_path):
    path = tmp_path / "c"
    build_teacher_cache(_teacher(0), _digits(), path, epochs=1, device="cpu")
    again = build_teacher_cache(_teacher(0), _digits(), path, epochs=1, storage="fp32", device="cpu")  # same key
    assert again.meta["storage"] == "fp32" and not (path / "meta.json.tmp").exists()
    (path / "meta.json").unlink()  # an unfinished build: nothing finished to lose
    assert build_teacher_cache(_teacher(1), _digits(), path, epochs=1, device="cpu").epochs == 1
    broken = tmp_path / "broken"
    _cache(broken)
    (broken / "meta.json").write_text("{not json")
    with untouched(broken), pytest.raises(FileExistsError, match=r"holds a meta\.json that is not valid JSON"):
        build_teacher_cache(_teacher(0), _digits(), broken, epochs=1, device="cpu")
    (tmp_path / "file").write_text("x")
    with untouched(tmp_path / "file"), pytest.raises(FileExistsError, match=r"'.*file' is a file, not a folder"):
        build_teacher_cache(_teacher(0), _digits(), tmp_path / "file", epochs=1, device="cpu")


def test_overwrite_reaches_the_build_from_a_recipe_and_the_command_line(tmp_path, monkeypatch):
    path = tmp_path / "c"
    build_teacher_cache(_teacher(0), _digits(), path, epochs=1, device="cpu")
    cli = SimpleNamespace(
        model=SimpleNamespace(teacher=Teacher(_teacher(1)), temperature=4.0),
        trainer=SimpleNamespace(max_epochs=1, precision="32-true"),
        datamodule=_digits(),
    )
    monkeypatch.setattr(cache_app, "build_cli", lambda args, run=False: cli)
    with untouched(path), pytest.raises(FileExistsError, match="built for something else"):
        build_from_recipe("recipe.yaml", out=path, device="cpu")
    assert build_from_recipe("recipe.yaml", out=path, device="cpu", overwrite=True).meta["teacher"] != ""
    seen = []
    fake = SimpleNamespace(arrays={}, path=path, nbytes=0)
    monkeypatch.setattr(cache_app, "build_from_recipe", lambda *a, **kw: seen.append(kw["overwrite"]) or fake)
    cache_app.main(["--config", "recipe.yaml"])
    cache_app.main(["--config", "recipe.yaml", "--overwrite"])
    assert seen == [False, True]
