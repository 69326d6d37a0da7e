"""An LM teacher store filled from an OpenAI-compatible completions server (a real HTTP server started here,
serving a tiny transformers model in vLLM's JSON shape): equal to the store built in process, retried, resumable,
refusing another tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from lightning_kd.apps.cache_lm import main as cache_lm_main  # noqa: E402
from lightning_kd.cache.lm_build import build_lm_store  # noqa: E402
from lightning_kd.cache.lm_server import CompletionsServer, ServerError, build_lm_store_from_server  # noqa: E402
from lightning_kd.cache.lm_store import LMTeacherStore  # noqa: E402
from lightning_kd.cache.lm_teacher import CachedLMTeacher  # noqa: E402
from lightning_kd.modules.causal_lm import CausalLMDistillation  # noqa: E402
from tests.cache.completions_server import CompletionsTestServer  # noqa: E402
from tests.cache.test_lm_store import fit, make_dm, write_lm_recipe  # noqa: E402
from tests.lm_helpers import tiny, write_corpus  # noqa: E402


@pytest.fixture
def dm(tmp_path):
    dm = make_dm(tmp_path)
    dm.setup()
    return dm


def client(url, **kw):
    return CompletionsServer(url, timeout=30, backoff=0.01, **kw)


def test_a_store_filled_from_the_server_equals_the_one_built_in_process(tmp_path, dm):
    with CompletionsTestServer(tiny(1), dm.tokenizer) as server:
        store = build_lm_store_from_server(client(server.url), dm, tmp_path / "served", k=8, batch_size=5)
        requests = len(server.requests)
    local = build_lm_store(tiny(1), dm, tmp_path / "local", k=8)
    n = len(dm.splits["train"])
    assert requests == 2 + -(-n // 5)  # the tokenizer probe, one sequence's form check, then batches of 5
    assert np.array_equal(np.asarray(store.arrays["ids"]), np.asarray(local.arrays["ids"]))
    np.testing.assert_allclose(
        np.asarray(store.arrays["logprobs"], np.float32), np.asarray(local.arrays["logprobs"], np.float32), atol=2e-3
    )
    meta = LMTeacherStore.open(tmp_path / "served").meta
    assert meta["server_model"] == "tiny-teacher" and meta["server_url"] == server.url + "/v1"
    assert meta["vocab_fingerprint"] == dm.vocab_fingerprint and meta["temperature"] == 1.0
    fid = meta["fidelity"]
    assert fid["captured_mass"] == pytest.approx(local.meta["fidelity"]["captured_mass"], abs=1e-3)
    assert "held_out" not in fid and fid["bytes_per_token"] == 48
    # a run reads it; the live model (for validation) is not compared with a server's weights
    module = CausalLMDistillation(teacher=CachedLMTeacher(str(tmp_path / "served"), model=tiny(1)), student=tiny(2),
                                  chunk_size=None)  # fmt: skip
    assert torch.isfinite(fit(module, make_dm(tmp_path), tmp_path / "run").callback_metrics["train/loss"])


def test_the_client_retries_a_busy_server_and_names_one_that_never_answers(tmp_path, dm):
    with CompletionsTestServer(tiny(1), dm.tokenizer, fail_first=2) as server:
        build_lm_store_from_server(client(server.url, retries=3), dm, tmp_path / "s", k=4, batch_size=64)
        n = len(dm.splits["train"])
        assert len(server.requests) == 2 + 2 + -(-n // 64)  # two 503s, the two checks, then the batches of 64
    with CompletionsTestServer(tiny(1), dm.tokenizer, fail_first=10) as server:
        with pytest.raises(ServerError, match=r"no answer from .* after 3 attempts \(last: HTTP 503: .*warming up"):
            build_lm_store_from_server(client(server.url, retries=2), dm, tmp_path / "t", k=4)
    dead = CompletionsServer(server.url, model="m", timeout=2, retries=1, backoff=0.01)  # shut down: refused
    with pytest.raises(ServerError, match=r"no answer from http://127\.0\.0\.1:\d+/v1/completions after 2 attempts"):
        dead.tokenize("x")
    assert not (tmp_path / "t").exists()  # nothing was written before the server answered


def test_an_interrupted_fill_resumes_and_asks_only_for_the_missing_rows(tmp_path, dm, monkeypatch):
    with CompletionsTestServer(tiny(1), dm.tokenizer) as server:
        real = CompletionsServer.prompt_topk
        calls = []

        def flaky(self, rows, k):
            calls.append(len(rows))
            if len(calls) == 4:  # the form check, two batches of 4, then
                raise KeyboardInterrupt  # stopped in the middle
            return real(self, rows, k)

        monkeypatch.setattr(CompletionsServer, "prompt_topk", flaky)
        with pytest.raises(KeyboardInterrupt):
            build_lm_store_from_server(client(server.url), dm, tmp_path / "s", k=4, batch_size=4)
        monkeypatch.setattr(CompletionsServer, "prompt_topk", real)
        before = len(server.requests)
        store = build_lm_store_from_server(client(server.url), dm, tmp_path / "s", k=4, batch_size=4)
        asked = sum(len(r["prompt"]) for r in server.requests[before:] if isinstance(r["prompt"], list))
    assert asked == 1 + len(dm.splits["train"]) - 8  # the form check; two batches of 4 were stored before the stop
    local = build_lm_store(tiny(1), dm, tmp_path / "local", k=4)
    assert np.array_equal(np.asarray(store.arrays["ids"]), np.asarray(local.arrays["ids"]))


def test_another_tokenizer_an_altered_prompt_too_few_logprobs_and_a_temperature_are_refused(tmp_path, dm):
    from tests.lm_families import metaspace_tokenizer

    with CompletionsTestServer(tiny(1), metaspace_tokenizer(tmp_path / "other")) as server:
        with pytest.raises(ServerError, match=r"the server's tokenizer \(tiny-teacher at .*\) is not the data's"):
            build_lm_store_from_server(client(server.url), dm, tmp_path / "a", k=4)
    with CompletionsTestServer(tiny(1), dm.tokenizer, bos=1) as server:
        with pytest.raises(ServerError, match=r"echoed other prompt tokens than sent .*a BOS\?"):
            build_lm_store_from_server(client(server.url), dm, tmp_path / "b", k=4)
    with CompletionsTestServer(tiny(1), dm.tokenizer, max_logprobs=20) as server:
        with pytest.raises(ServerError, match=r"HTTP 400: .*greater than max allowed: 20.*--max-logprobs"):
            build_lm_store_from_server(client(server.url), dm, tmp_path / "c", k=32)
        with pytest.raises(ValueError, match=r"raw distribution \(T = 1\), the recipe's temperature is 2.0"):
            build_lm_store_from_server(client(server.url), dm, tmp_path / "d", k=4, temperature=2.0)
        with pytest.raises(ServerError, match=r"The model `other` does not exist"):
            build_lm_store_from_server(client(server.url, model="other"), dm, tmp_path / "e", k=4)
    assert not any((tmp_path / x).exists() for x in "abcde")


def test_cache_lm_command_fills_from_a_server(tmp_path, capsys):
    path = write_lm_recipe(tmp_path, {})  # no teacher model: the server is the teacher
    dm = make_dm(tmp_path)
    dm.setup()
    with CompletionsTestServer(tiny(1), dm.tokenizer, name="teacher-7b") as server:
        cache_lm_main(["--config", str(path), "--k", "8", "--server", server.url])
    out = capsys.readouterr().out
    assert f"(topk from teacher-7b at {server.url}/v1)" in out and "48 bytes/token" in out
    assert "held-out KL: not measured" in out
    assert json.loads((tmp_path / "store" / "meta.json").read_text())["server_model"] == "teacher-7b"


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_a_users_model_folder_served_fills_the_store_the_folder_builds_in_process(tmp_path, family):
    """What users bring: a saved transformers folder and its tokenizer (Qwen: no BOS; Llama: <s> before every
    text), the data module reading the folder's tokenizer, the server loading the same folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightning_kd.data.text import PackedTextDataModule
    from tests.lm_families import model_folder

    folder = model_folder(tmp_path / "models", family, seed=3)
    data = PackedTextDataModule(
        text_dir=str(write_corpus(tmp_path / "corpus")), pattern="*.py", tokenizer=str(folder), val_fraction=0.3,
        seq_len=16, batch_size=4, cache_dir=str(tmp_path / "cache"), with_indices=True,
    )  # fmt: skip
    data.setup()
    model = AutoModelForCausalLM.from_pretrained(folder)
    with CompletionsTestServer(model, AutoTokenizer.from_pretrained(folder), name=folder.name) as server:
        served = build_lm_store_from_server(client(server.url), data, tmp_path / "served", k=6, batch_size=8)
    local = build_lm_store(AutoModelForCausalLM.from_pretrained(folder), data, tmp_path / "local", k=6)
    ids_s, ids_l = np.asarray(served.arrays["ids"]), np.asarray(local.arrays["ids"])
    lp_s, lp_l = (np.asarray(x.arrays["logprobs"], np.float32) for x in (served, local))
    np.testing.assert_allclose(lp_s, lp_l, atol=2e-3)
    # the same tokens, in the same order, except among exactly tied log-probabilities (a random model's
    # untrained rows: the server orders ties by id, torch.topk as it comes)
    differ = (ids_s != ids_l).any(-1)
    tied = np.array([len(np.unique(row)) < len(row) for row in lp_l[differ]])
    assert differ.mean() < 0.01 and tied.all()
    assert served.meta["server_model"] == folder.name and served.meta["vocab_fingerprint"] == data.vocab_fingerprint
