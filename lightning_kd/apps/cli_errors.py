"""What the ``lightning-kd`` command prints when a run fails: the library's own message, in a few lines.

jsonargparse wraps an error raised while a class is built in layers of "Does not validate against any of the
Union subtypes"; Lightning adds its own frames. A user needs the innermost message a lightning-kd check wrote
(it names the value and the fix) and which option it concerns. The full traceback stays one environment variable
away: ``LIGHTNING_KD_DEBUG=1``.
"""

from __future__ import annotations

import difflib
import re
import traceback

DEBUG_ENV = "LIGHTNING_KD_DEBUG"
_NOISE = re.compile(r"^\s*(- )?Expected a <class 'NoneType'>\s*$")


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _raised_by_lightning_kd(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and "lightning_kd" in frames[-1].filename.replace("\\", "/")


def _option(text: str) -> str | None:
    found = re.findall(r'Parser key "([^"]+)"', text)
    return found[-1] if found else None


def _innermost_listed(text: str) -> str | None:
    """The last "- <message>" line of a jsonargparse union error that is not the NoneType alternative."""
    lines = [ln.strip()[2:] for ln in text.splitlines() if ln.strip().startswith("- ") and not _NOISE.match(ln)]
    return lines[-1] if lines else None


def _init_args(class_path: str) -> list[str]:
    """Constructor arguments of a class (a parent's too when it passes ``**kwargs`` on), for suggestions."""
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    names: list[str] = []
    for klass in getattr(cls, "__mro__", [cls]):
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        names += [n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return list(dict.fromkeys(names))


def _unknown_argument(text: str) -> str | None:
    found = re.findall(r"Problem with given class_path '([^']+)':\s*Option '([^']+)' is not accepted", text)
    if not found:
        return None
    class_path, name = found[-1]
    choices = _init_args(class_path)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else (f"; its arguments: {', '.join(choices)}." if choices else ".")
    return f"{class_path.rsplit('.', 1)[-1]} has no argument {name!r}{hint}"


def short_message(err: BaseException) -> str:
    """A line or two for ``err``: the innermost message lightning-kd raised, or the parser's own (``option: expected
    …, got …``), with the option it concerns."""
    chain = _chain(err)
    ours = [e for e in chain if _raised_by_lightning_kd(e)]
    text = "\n".join(str(e) for e in chain)
    option = _option(text)
    given = re.findall(r"Given value: (.*)", text)
    unknown = _unknown_argument(text)
    if ours:
        message = f"{type(ours[-1]).__name__}: {ours[-1]}"
    elif unknown:
        message = unknown
    else:
        listed = _innermost_listed(text)
        message = listed if listed else f"{type(chain[-1]).__name__}: {str(chain[-1]).strip().splitlines()[-1]}"
        if listed and given:
            message = f"{message}, got {given[-1].strip()!r}"
    if option and option not in message:
        message = f"{option}: {message}"
    return message
