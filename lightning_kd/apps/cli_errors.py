"""What the ``lightning-kd`` command prints when a run fails: the library's own message, in a few lines.

jsonargparse wraps an error raised while a class is built in layers of "Does not validate against any of the
Union subtypes"; Lightning adds its own frames. A user needs the innermost message a lightning-kd check wrote
(it names the value and the fix) and which option it concerns. The full traceback stays one environment variable
away: ``LIGHTNING_KD_DEBUG=1``.
"""

from __future__ import annotations

import difflib
import errno
import re
import traceback
from collections.abc import Sequence
from pathlib import Path

DEBUG_ENV = "LIGHTNING_KD_DEBUG"
_NOISE = re.compile(r"^\s*(- )?Expected a <class 'NoneType'>\s*$")


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and what it was raised from, as Python prints them (``raise … from None`` ends the chain)."""
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
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
    if name == "temperature" and not close:  # a loss module: T is the distillation module's, passed every call
        hint += " The temperature is the distillation module's own setting: set model.init_args.temperature once."
    return f"{class_path.rsplit('.', 1)[-1]} has no argument {name!r}{hint}"


def _config_files(argv: Sequence[str] | None) -> list[str]:
    """The files given as ``--config X`` or ``--config=X`` in ``argv``."""
    args = list(argv or [])
    files = [b for a, b in zip(args, args[1:]) if a == "--config"]
    return files + [a.split("=", 1)[1] for a in args if a.startswith("--config=")]


def _yaml_problem(chain: list[BaseException], argv: Sequence[str] | None) -> str | None:
    """A YAML syntax error, with the file it is in (the parser reads the text, so its message names no file)."""
    import yaml

    if not any(isinstance(e, yaml.YAMLError) for e in chain):
        return None
    for path in _config_files(argv):
        try:
            yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
            opened = f" ({context} opened on line {start.line + 1})" if context and start else ""
            return f"{path}{where}: {problem}{opened}; fix the YAML there (an unclosed bracket or brace? a tab?)."
        except OSError:
            continue
    err = next(e for e in chain if isinstance(e, yaml.YAMLError))
    return (
        f"a YAML syntax error ({' '.join(str(err).split())}) in a --config file or in a YAML value on the command "
        "line; fix the YAML there."
    )


def _missing_class(text: str) -> str | None:
    """A ``class_path`` naming nothing that exists, with the closest name that does."""
    import importlib

    found = re.findall(r"Problem with given class_path '([^']+)':\s*module '([^']+)' has no attribute '([^']+)'", text)
    if not found:
        return None
    class_path, module_name, attr = found[-1]
    try:
        names = [n for n in dir(importlib.import_module(module_name)) if not n.startswith("_")]
    except ImportError:
        names = []
    rest = class_path[len(f"{module_name}.{attr}") :]
    close = [f"{module_name}.{c}{rest}" for c in difflib.get_close_matches(attr, names, n=5, cutoff=0.5)]
    close.sort(key=lambda path: not _resolves(path))  # stable: the closest that exists first
    hint = f"did you mean {close[0]!r}?" if close else "check the spelling of the import path."
    return f"class_path {class_path!r} does not exist ({module_name} has no {attr!r}); {hint}"


def _resolves(path: str) -> bool:
    import importlib

    module, _, name = path.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


def _top_level_options() -> list[str]:
    return [
        "config", "print_config", "seed_everything", "trainer", "model", "data", "ckpt_path", "checkpoint",
        "allow_untrained",
    ]  # fmt: skip


def _unrecognized(text: str) -> str | None:
    """Options the parser does not know, each with the closest one it does."""
    found = re.findall(r"unrecognized arguments: ([^\n]*)", text)
    if not found:
        return None
    flags = [a for a in found[-1].split() if a.startswith("-")]
    hints = []
    for flag in flags:
        key = flag.lstrip("-").split("=", 1)[0]
        head, _, rest = key.partition(".")
        owner = {"trainer": "lightning.pytorch.Trainer", "checkpoint": "lightning_kd.callbacks.RunCheckpoint"}
        if rest and head in owner:
            close = difflib.get_close_matches(rest, _init_args(owner[head]), n=1)
            hints += [f"--{head}.{c}" for c in close]
        else:
            close = difflib.get_close_matches(key.replace("-", "_"), _top_level_options(), n=1)
            hints += [f"--{c}" for c in close]
    hint = f"did you mean {' / '.join(hints)}?" if hints else "check the spelling (`lightning-kd fit --help`)."
    return f"unrecognized argument{'s' * (len(flags) != 1)}: {' '.join(flags)}; {hint}"


_TYPES = {"int": ("a whole number", "10"), "float": ("a number", "0.1"), "bool": ("true or false", "true")}


def _wrong_type(text: str) -> str | None:
    """A value of the wrong type, with what to give instead."""
    found = re.findall(r"Expected a <class '(\w+)'>\. Got value: ([^\n]*)", text)
    if not found or found[-1][0] not in _TYPES:
        return None
    kind, value = found[-1]
    keys = re.findall(r'Parser key "([^"]+)"', text)
    if not keys:
        return None
    flag = keys[-1]
    if "." not in flag and len(keys) > 1 and keys[0] in ("model", "data"):
        flag = f"{keys[0]}.init_args.{flag}"
    noun, example = _TYPES[kind]
    return f"{flag}: expected {noun} ({kind}), got {value.strip()!r}; give {noun}, e.g. --{flag}={example}"


def _no_subcommand(text: str, argv: Sequence[str] | None) -> str | None:
    found = re.search(r'expected "subcommand" to be one of \{([^}]*)\}, but it was not provided', text)
    if not found:
        return None
    rest = " ".join(argv or []) or "--config <recipe.yaml>"
    rest = rest if len(rest) < 160 else "--config <recipe.yaml> ..."
    return (
        f"{found.group(0)}. Start the command with one of them, e.g. `lightning-kd fit {rest}` (`lightning-kd --help` "
        "also lists the tools: cache, pipeline, quickstart, report)."
    )


def _missing_file(chain: list[BaseException]) -> str | None:
    """A file the parser could not find (a ``--config``), with the nearest names beside it."""
    for err in chain:
        found = re.search(r"File does not exist: '([^']+)'", str(err))
        if found and type(err).__name__ == "PathError":
            path = Path(found.group(1))
            near = []
            if path.parent.is_dir():
                near = difflib.get_close_matches(path.name, [p.name for p in path.parent.iterdir()], n=1, cutoff=0.8)
            hint = f"did you mean {str(path.parent / near[0])!r}? " if near else ""
            return (
                f"{type(err).__name__}: {err}; {hint}check the path (relative to the folder you run in, "
                f"{Path.cwd()}); the recipes are in configs/<dataset>/, e.g. configs/digits/base.yaml."
            )
    return None


def short_message(err: BaseException, argv: Sequence[str] | None = None) -> str:
    """A line or two for ``err``: the innermost message lightning-kd raised, or the parser's own (``option: expected
    …, got …``) with the option it concerns and a remedy (did-you-mean, the file and line of a YAML error, what to
    give instead). ``argv``: the command's arguments (to find the ``--config`` files)."""
    chain = _chain(err)
    ours = [e for e in chain if _raised_by_lightning_kd(e)]
    text = "\n".join(str(e) for e in chain)
    option = _option(text)
    given = re.findall(r"Given value: (.*)", text)
    missing_class = _missing_class(text)  # before ours: lightning_kd's lazy attributes raise the AttributeError
    if missing_class:
        return _with_option(missing_class, option)
    full = next((e for e in chain if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)), None)
    if full is not None and not ours:  # not the cross-device rename that failed first and sits innermost
        return (
            f"no space left on the disk of {full.filename or 'a file being written'}: {full.strerror}. Free space "
            "there (or point the run at a disk with room); what was written before is untouched."
        )
    if ours:
        return _with_option(f"{type(ours[-1]).__name__}: {ours[-1]}", option)
    for explain in (
        lambda: _yaml_problem(chain, argv),
        lambda: _unknown_argument(text),
        lambda: _unrecognized(text),
        lambda: _wrong_type(text),
        lambda: _no_subcommand(text, argv),
        lambda: _missing_file(chain),
    ):
        message = explain()
        if message:
            return _with_option(message, option)
    listed = _innermost_listed(text)
    message = listed if listed else f"{type(chain[-1]).__name__}: {str(chain[-1]).strip().splitlines()[-1]}"
    if listed and given:
        message = f"{message}, got {given[-1].strip()!r}"
    return _with_option(message, option)


def _with_option(message: str, option: str | None) -> str:
    return f"{option}: {message}" if option and option not in message else message
