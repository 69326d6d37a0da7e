"""A small OpenAI-compatible completions server for tests: a ``transformers`` causal LM and its tokenizer answer
``/v1/models`` and ``/v1/completions`` with ``echo`` + ``logprobs`` in the JSON shape vLLM serves (prompt
log-probabilities per position, ``return_tokens_as_token_ids``), so the store's client is tested for real."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch


class CompletionsTestServer:
    """``with CompletionsTestServer(model, tokenizer) as server: server.url``.

    Args:
        model: a causal LM (``model(input_ids=…).logits``).
        tokenizer: encodes text prompts (``tokenizer(text)["input_ids"]``).
        name: the model name served.
        max_logprobs: the most log-probabilities per position it returns (vLLM's ``--max-logprobs``).
        fail_first: answer the first this many completions requests with HTTP 503 (to test retries).
        bos: a token id the server puts before every token-id prompt (a server that alters prompts).
    """

    def __init__(self, model: Any, tokenizer: Any, name: str = "tiny-teacher", max_logprobs: int = 20,
                 fail_first: int = 0, bos: int | None = None) -> None:  # fmt: skip
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.max_logprobs, self.fail_first, self.bos = max_logprobs, fail_first, bos
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.name, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                    fail = len(server.requests) <= server.fail_first
                if fail:
                    self._send(503, {"error": {"message": "warming up"}})
                elif self.path != "/v1/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                elif body.get("model") != server.name:
                    self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
                elif int(body.get("logprobs") or 0) > server.max_logprobs:
                    message = f"Requested sample logprobs of {body['logprobs']}, which is greater than max allowed: 20"
                    self._send(400, {"error": {"message": message}})
                else:
                    self._send(200, server.complete(body))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _prompts(self, prompt: Any) -> list[list[int]]:
        if isinstance(prompt, str):
            return [list(self.tokenizer(prompt)["input_ids"])]
        if prompt and isinstance(prompt[0], int):
            prompt = [prompt]
        out = []
        for p in prompt:
            ids = list(self.tokenizer(p)["input_ids"]) if isinstance(p, str) else [int(x) for x in p]
            out.append(ids if self.bos is None or isinstance(p, str) else [self.bos, *ids])
        return out

    @torch.no_grad()
    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        n = int(body.get("logprobs") or 0)
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        name = (lambda i: f"token_id:{i}") if as_ids else (lambda i: self.tokenizer.decode([i]))
        choices, used = [], 0
        for index, ids in enumerate(self._prompts(body["prompt"])):
            logp = torch.log_softmax(self.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            nxt = int(logp[-1].argmax())
            tokens = [*ids, nxt]
            tops: list[dict[str, float] | None] = [None]
            for pos in range(1, len(tokens)):
                row = logp[pos - 1]
                values, top = row.topk(n)
                entry = {name(int(t)): float(v) for v, t in zip(values, top)}
                entry.setdefault(name(tokens[pos]), float(row[tokens[pos]]))  # vLLM adds the actual token
                tops.append(entry)
            token_logprobs = [None, *(float(logp[p - 1, tokens[p]]) for p in range(1, len(tokens)))]
            logprobs = {"tokens": [name(t) for t in tokens], "token_logprobs": token_logprobs,
                        "top_logprobs": tops, "text_offset": list(range(len(tokens)))}  # fmt: skip
            choices.append({"index": index, "text": "", "logprobs": logprobs, "finish_reason": "length"})
            used += len(ids)
        usage = {"prompt_tokens": used, "completion_tokens": len(choices), "total_tokens": used + len(choices)}
        return {"id": "cmpl-test", "object": "text_completion", "model": self.name, "choices": choices, "usage": usage}

    def __enter__(self) -> CompletionsTestServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
