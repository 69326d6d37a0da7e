"""Config files checked before the CLI reads them, and configs written so they can be read again elsewhere.

- A YAML mapping with a key twice keeps only the last (YAML's loaders drop the first without a word): a recipe
  with two ``trainer:`` blocks silently loses one. :func:`refuse_duplicate_keys` names the file, both lines and
  the key.
- ``--print_config`` (and the ``config.yaml`` a run saves) writes every value resolved, so the logger's
  ``save_dir: ${trainer.default_root_dir}`` comes out as the folder it was at print time; fitting that file with
  another ``--trainer.default_root_dir`` would write the run into the old folder. :class:`KDArgumentParser` writes
  such values back as ``${trainer.default_root_dir}`` (a value equal to the run folder, or a path under it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser

ROOT_KEY = "trainer.default_root_dir"
_PLACEHOLDER = "@lightning-kd-root@"  # '@' cannot start a plain YAML scalar: the dumper quotes the value


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping holding one key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(key, seen[key], line)
            try:
                seen[key] = line
            except TypeError:  # an unhashable key: the plain loader's own error follows
                break
        return super().construct_mapping(node, deep=deep)


class DuplicateKeyError(ValueError):
    def __init__(self, key: Any, first: int, second: int) -> None:
        self.key, self.first, self.second = key, first, second
        super().__init__(f"key {key!r} at line {second} was already given at line {first}")


def refuse_duplicate_keys(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming ``path``, the key and both lines when a mapping in the YAML file repeats a key.
    A file that is not readable YAML is left to the parser, which reports it."""
    try:
        text = open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError):
        return
    try:
        yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        return
    except DuplicateKeyError as err:
        found = err
    except yaml.YAMLError:
        return
    raise ValueError(  # outside the handler: the message is this one, not the loader's
        f"{os.fspath(path)}:{found.second}: the key {found.key!r} is given twice in one block (first at line "
        f"{found.first}); YAML keeps only the last, so what line {found.first} gives would be dropped without a "
        "word. Give it once: merge the two into one."
    )


def config_files(argv: Sequence[str]) -> list[str]:
    """The files given with ``--config``/``-c`` (``--config x``, ``--config=x``) that exist."""
    files = []
    for i, arg in enumerate(argv):
        value = None
        if arg in ("--config", "-c") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        if value and os.path.isfile(value):
            files.append(value)
    return files


class KDArgumentParser(LightningArgumentParser):
    """Lightning's parser, dumping values that name the run folder as ``${trainer.default_root_dir}`` (see the
    module docstring)."""

    def dump(self, cfg: Namespace, *args: Any, **kwargs: Any) -> str:
        root = cfg.get(ROOT_KEY) if isinstance(cfg, Namespace) else None
        if not isinstance(root, (str, os.PathLike)) or str(root) in ("", "."):
            return super().dump(cfg, *args, **kwargs)
        cfg = cfg.clone()
        if _interpolate(cfg, os.path.normpath(os.fspath(root)), ""):
            kwargs.setdefault("skip_validation", True)  # the placeholder is not yet the path a typed field expects
        # a placeholder while dumping: jsonargparse would rewrite an interpolation relative to its own key
        return super().dump(cfg, *args, **kwargs).replace(_PLACEHOLDER, "${" + ROOT_KEY + "}")


def _interpolate(node: Any, root: str, prefix: str) -> bool:
    """Replace, in place, string values equal to ``root`` or under it by the interpolation; whether any was."""
    changed = False
    items = list(node.items(branches=True)) if isinstance(node, Namespace) else (
        list(node.items()) if isinstance(node, dict) else list(enumerate(node)) if isinstance(node, list) else []
    )  # fmt: skip
    for key, value in items:
        where = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (Namespace, dict, list)):
            changed |= _interpolate(value, root, where)
        elif isinstance(value, (str, os.PathLike)) and where != ROOT_KEY:
            text = os.fspath(value)
            norm = os.path.normpath(text) if text else text
            if norm == root:
                node[key] = _PLACEHOLDER
                changed = True
            elif norm.startswith(root + os.sep):
                node[key] = _PLACEHOLDER + "/" + os.path.relpath(norm, root).replace(os.sep, "/")
                changed = True
    return changed
