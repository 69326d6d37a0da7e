"""Records of prompt/response and chat JSONL files, read and checked line by line (the format:
:mod:`lightning_kd.data.prompt_response`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass(frozen=True)
class Example:
    """One line of a JSONL file: a prompt and its response, or a conversation (``messages``)."""

    line: int
    prompt: str | None = None
    response: str | None = None
    messages: tuple[dict[str, str], ...] | None = None


def read_examples(path: str | os.PathLike) -> list[Example]:
    """The examples of a JSONL file (see the module docstring for the two forms); blank lines are skipped, other
    keys ignored. A malformed line — not JSON, neither form, a role that is not one of :data:`ROLES`, a
    conversation without an assistant turn, an empty response or assistant turn — raises ``ValueError`` naming the
    file, the line and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Prompt/response file {path} does not exist.")
    examples = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{path}, line {number}: not UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1}); JSONL "
                    "is UTF-8: convert the file (iconv -f latin1 -t utf-8) or fix the line."
                ) from None
            if line.strip():
                examples.append(_example(line, f"{path}, line {number}", number))
    if not examples:
        raise ValueError(f"{path} holds no examples: write one JSON object per line.")
    return examples


def _example(line: str, where: str, number: int) -> Example:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err.msg}).") from err
    if not isinstance(record, dict):
        raise ValueError(f'{where}: expected an object, {{"prompt": ..., "response": ...}} or {{"messages": [...]}}.')
    if "messages" in record:
        return Example(number, messages=_messages(record["messages"], where))
    for key in ("prompt", "response"):
        if key not in record:
            raise ValueError(
                f"{where}: missing key {key!r}; each line needs 'prompt' and 'response', or 'messages' (a chat)."
            )
        if not isinstance(record[key], str):
            raise ValueError(f"{where}: {key!r} must be a string, got {type(record[key]).__name__}.")
    if not record["response"].strip():
        raise ValueError(f"{where}: the response is empty: there is nothing to learn from it; drop the line.")
    return Example(number, prompt=record["prompt"], response=record["response"])


def _messages(messages: Any, where: str) -> tuple[dict[str, str], ...]:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of {{'role': ..., 'content': ...}} objects.")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: message {i} must be an object with a string 'role' and a string 'content'.")
        if m["role"] not in ROLES:
            raise ValueError(f"{where}: message {i} has role {m['role']!r}; roles are {', '.join(ROLES)}.")
        if m["role"] == "assistant" and not m["content"].strip():
            raise ValueError(f"{where}: message {i} (assistant) is empty: there is nothing to learn from it.")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise ValueError(f"{where}: the conversation has no assistant message: there is nothing to learn from it.")
    return tuple(out)
