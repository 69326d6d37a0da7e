"""Fill an LM teacher store from an inference server: the teacher runs behind an OpenAI-compatible completions
endpoint with prompt log-probabilities (the form vLLM serves: ``echo``, ``logprobs``, prompts given as token ids,
``return_tokens_as_token_ids``), the store is written here.

    lightning-kd cache-lm --config configs/lm/base.yaml --config configs/lm/kd_offline_topk.yaml --k 20 \\
        --server http://gpu-box:8000

Each request sends ``batch_size`` training sequences as token-id prompts with ``echo: true, max_tokens: 1,
logprobs: k``; the answer's ``top_logprobs`` at prompt position ``i`` is the teacher's distribution of token ``i``
given the tokens before it (the store's row ``i − 1``), and the one generated token's gives the last row. A server
returns at most its ``--max-logprobs`` (vLLM's default is 20) per position: a smaller answer than ``k`` is refused,
naming the setting. Requests are retried (connection errors, timeouts, 429 and 5xx) with exponential backoff; the
store's ``done`` flags make an interrupted fill resumable by running the same command again.

Before anything is stored the server's tokenizer is compared with the data's: a probe text (fixed characters plus
the decoded start of the training data) is sent as text and the ids the server echoes must be the ones the data's
tokenizer gives; then one training sequence is asked for, so a server that alters token-id prompts or returns fewer
than ``k`` log-probabilities is refused before a file is made. Every returned id must be inside the data's
vocabulary. The store records the server's address
and model name, and the data tokenizer's fingerprint as every store does.

What a server cannot give: its prompt log-probabilities are the model's raw distribution (``T = 1``), so a run at
another temperature is refused; and only the top ``N`` tokens of each position come back, so a server fills top-k
stores, not sampled ones (drawing needs the whole distribution). Pure standard library (``urllib``) besides numpy
and torch.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import torch

from lightning_kd.cache.lm_fidelity import captured_mass, fidelity_report
from lightning_kd.cache.lm_keys import training_tokens
from lightning_kd.cache.lm_store import LMTeacherStore, StoreDtype
from lightning_kd.data.fingerprint import tokens_fingerprint

PROBE = "def probe(x):\n    return {'naïve': x ** 2, \"tabs\":\t[1, 2]}  # ünïcode, 数字, emoji 🙂\n"
_RETRY_STATUS = {429, 500, 502, 503, 504}


class ServerError(RuntimeError):
    """What the server said, or that it did not answer after the retries."""


class CompletionsServer:
    """A client of an OpenAI-compatible ``/v1/completions`` endpoint (module docstring).

    Args:
        url: the server, e.g. ``http://localhost:8000`` (``/v1`` or ``/v1/completions`` may be included).
        model: the served model's name; ``None``: the first one ``/v1/models`` lists.
        timeout: seconds per request.
        retries: attempts after the first, for connection errors, timeouts, 429 and 5xx.
        backoff: seconds before the first retry, doubled each time.
        api_key: sent as a bearer token (default: ``$OPENAI_API_KEY`` when set).
    """

    def __init__(
        self,
        url: str,
        model: str | None = None,
        timeout: float = 300.0,
        retries: int = 5,
        backoff: float = 1.0,
        api_key: str | None = None,
    ) -> None:
        base = url.rstrip("/")
        for tail in ("/completions", "/v1"):
            base = base[: -len(tail)] if base.endswith(tail) else base
        self.base, self.timeout, self.retries, self.backoff = base + "/v1", timeout, retries, backoff
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self._model = model

    def _call(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.base}/{path}"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if payload is None else json.dumps(payload).encode()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=self.timeout) as r:
                    return json.loads(r.read().decode())
            except urllib.error.HTTPError as err:
                body = err.read().decode(errors="replace")[:500]
                if err.code not in _RETRY_STATUS:
                    hint = (
                        " (vLLM caps the log-probabilities per position at --max-logprobs, 20 by default: raise it, "
                        "or lower --k)"
                        if "logprob" in body.lower()
                        else ""
                    )
                    raise ServerError(
                        f"the server at {url} refused the request: HTTP {err.code}: {body}{hint}"
                    ) from err
                last = f"HTTP {err.code}: {body}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            except json.JSONDecodeError as err:
                raise ServerError(f"the server at {url} did not answer with JSON ({err}).") from err
        raise ServerError(
            f"no answer from {url} after {self.retries + 1} attempts (last: {last}); check that the server is up and "
            "reachable, then run the same command again: the rows stored so far are kept."
        )

    @property
    def model(self) -> str:
        """The served model's name (asked of ``/v1/models`` once when not given)."""
        if self._model is None:
            listed = self._call("models").get("data") or []
            if not listed:
                raise ServerError(f"{self.base}/models lists no model; pass the model's name (--server_model).")
            self._model = str(listed[0]["id"])
        return self._model

    def _complete(self, prompt: Any, k: int) -> dict[str, Any]:
        payload = {
            "model": self.model, "prompt": prompt, "max_tokens": 1, "echo": True, "logprobs": k,
            "temperature": 0.0, "return_tokens_as_token_ids": True,
        }  # fmt: skip
        return self._call("completions", payload)

    def tokenize(self, text: str) -> list[int]:
        """The ids the server gives ``text`` (its tokenizer, with the special tokens it adds to a prompt)."""
        answer = self._complete(text, 1)
        n = int(answer.get("usage", {}).get("prompt_tokens", -1))
        tokens = _choices(answer, 1, self.base)[0]["logprobs"]["tokens"]
        return [_token_id(t, self.base) for t in tokens[:n]]

    def prompt_topk(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(logprobs float32, ids int64)`` ``(B, L, k)``: per position the server model's ``k`` most likely next
        tokens, descending, for the token-id ``rows`` ``(B, L)``."""
        b, length = rows.shape
        answer = self._complete([[int(x) for x in row] for row in rows], k)
        logprobs, ids = np.zeros((b, length, k), np.float32), np.zeros((b, length, k), np.int64)
        for i, choice in enumerate(_choices(answer, b, self.base)):
            lp = choice.get("logprobs") or {}
            tokens, tops = lp.get("tokens") or [], lp.get("top_logprobs") or []
            echoed = [_token_id(t, self.base) for t in tokens[:length]]
            if echoed != [int(x) for x in rows[i]]:
                where = next((j for j, (a, c) in enumerate(zip(echoed, rows[i])) if a != c), min(len(echoed), length))
                raise ServerError(
                    f"the server echoed other prompt tokens than sent for sequence {i} of the request (position "
                    f"{where}: {echoed[where : where + 3]} vs {rows[i][where : where + 3].tolist()}): it re-tokenised "
                    "or prefixed the prompt (a BOS?); serve the model so that token-id prompts are used as given."
                )
            if len(tops) < length + 1:
                raise ServerError(
                    f"the server returned log-probabilities for {len(tops)} positions, {length + 1} were expected (the "
                    "prompt echoed and one generated token): it does not follow the completions echo+logprobs form."
                )
            for j in range(length):
                top = tops[j + 1] or {}
                if len(top) < k:
                    raise ServerError(
                        f"the server returned {len(top)} log-probabilities at a position, k={k} were asked: start it "
                        f"with more (vLLM: --max-logprobs {k}) or build with --k {len(top)}."
                    )
                best = sorted(((v, _token_id(t, self.base)) for t, v in top.items()), reverse=True)[:k]
                logprobs[i, j], ids[i, j] = [v for v, _ in best], [t for _, t in best]
        return logprobs, ids


def _choices(answer: dict[str, Any], n: int, base: str) -> list[dict[str, Any]]:
    choices = sorted(answer.get("choices") or [], key=lambda c: int(c.get("index", 0)))
    if len(choices) != n:
        raise ServerError(f"{base}/completions answered {len(choices)} choices for {n} prompts.")
    return choices


def _token_id(token: str, base: str) -> int:
    if not token.startswith("token_id:"):
        raise ServerError(
            f"the server named a token {token!r}, not 'token_id:<id>': it ignores return_tokens_as_token_ids (vLLM "
            f"supports it); without ids the log-probabilities cannot be stored ({base})."
        )
    return int(token.split(":", 1)[1])


def check_server_tokenizer(server: CompletionsServer, tokenizer: Any, sample: np.ndarray) -> None:
    """Refuse a server whose tokenizer is not the data's: the probe text (plus ``sample``'s decoded start) must get
    the same ids from both."""
    text = PROBE + tokenizer.decode([int(x) for x in sample[:64]])
    ours = [int(x) for x in tokenizer(text, add_special_tokens=True)["input_ids"]]
    theirs = server.tokenize(text)
    if theirs != ours:
        where = next((j for j, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        raise ServerError(
            f"the server's tokenizer ({server.model} at {server.base}) is not the data's: the probe text gets "
            f"{len(theirs)} ids there and {len(ours)} here, first differing at position {where} (server "
            f"{theirs[where : where + 4]}, data {ours[where : where + 4]}). Serve the teacher with the tokenizer the "
            "data module uses (or give the data module the teacher's tokenizer)."
        )


def build_lm_store_from_server(
    server: CompletionsServer,
    datamodule: Any,
    out: str | os.PathLike,
    k: int,
    temperature: float = 1.0,
    dtype: StoreDtype = "fp16",
    batch_size: int = 16,
    overwrite: bool = False,
) -> LMTeacherStore:
    """Fill a top-``k`` store for ``datamodule``'s training sequences from ``server`` (module docstring)."""
    if temperature != 1.0:
        raise ValueError(
            f"a server's prompt log-probabilities are the model's raw distribution (T = 1), the recipe's temperature "
            f"is {temperature}: set the module's temperature to 1.0, or build the store in process (without --server)."
        )
    start = time.perf_counter()
    tokens = training_tokens(datamodule)
    vocab_size = int(datamodule.vocab_size)
    check_server_tokenizer(server, datamodule.tokenizer, tokens[0])
    server.prompt_topk(tokens[:1], k)  # the answer's form (echo, k log-probabilities) checked before a file is made
    store = LMTeacherStore.create(
        out, num_sequences=len(tokens), seq_len=tokens.shape[1], k=k, temperature=1.0, vocab_size=vocab_size,
        dtype=dtype, overwrite=overwrite, kind="topk", teacher_fingerprint=f"server:{server.model}",
        vocab_fingerprint=datamodule.vocab_fingerprint, data_fingerprint=tokens_fingerprint(tokens),
        server_url=server.base, server_model=server.model,
    )  # fmt: skip
    todo = store.remaining
    for first in range(0, len(todo), batch_size):
        rows = todo[first : first + batch_size]
        logprobs, ids = server.prompt_topk(tokens[rows], k)
        if (ids >= vocab_size).any() or (ids < 0).any():
            bad = int(ids[(ids >= vocab_size) | (ids < 0)][0])
            raise ServerError(
                f"the server returned token id {bad}, outside the data tokenizer's {vocab_size} ids: its vocabulary "
                "is another one (serve the teacher with the data's tokenizer), or its head is padded past the "
                "tokenizer and puts top-k mass on padding rows (an untrained model?); the store was not finished."
            )
        store.write(torch.as_tensor(rows), torch.from_numpy(logprobs), torch.from_numpy(ids))
    mass = captured_mass(store.arrays["logprobs"], store.arrays["ids"])
    store.finish(fidelity=fidelity_report(store.bytes_per_token, mass, time.perf_counter() - start, None))
    return store
