"""Load a model's weights from a lightning-kd checkpoint or a plain ``state_dict`` file. Pure torch.

Accepted files:
- a checkpoint written by :class:`~lightning_kd.ClassificationModule` (keys ``model.*``) or by
  :class:`~lightning_kd.DistillationModule` (the student, keys ``student.*``: a distilled student can teach
  the next generation);
- a plain ``state_dict`` (``torch.save(model.state_dict(), path)``), also one saved from a DDP-wrapped
  (``module.*``) or ``torch.compile``-d (``_orig_mod.*``) model.
"""

from __future__ import annotations

import difflib
import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from lightning_kd.core.digest import check_sidecar

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# where a model's weights sit inside a LightningModule checkpoint: ClassificationModule (model.),
# DistillationModule's student, its teacher component (teacher.model., saved with save_teacher), 0.1.0's
# teacher (teacher.), plain state_dicts ("")
_OWNER_PREFIXES = ("model.", "student.", "teacher.model.", "teacher.", "net.", "")
_CKPT_SUFFIXES = (".ckpt", ".pt", ".pth")
# torch.save's pre-1.6 format (`_use_new_zipfile_serialization=False`) opens with this pickled long
_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def _strip_wrappers(key: str) -> str:
    """Drop DDP's ``module.`` and compile's ``_orig_mod.`` where they stand as whole path components at the
    front, or right after an owner prefix (``model._orig_mod.conv1.weight``); never inside a name such as
    ``submodule.weight``."""
    parts = key.split(".")
    keep = [p for i, p in enumerate(parts) if not (p in ("module", "_orig_mod") and i < 3 and i < len(parts) - 1)]
    return ".".join(keep)


def extract_state_dict(obj: object, source: str = "the file") -> dict[str, Tensor]:
    """The tensor mapping inside a loaded checkpoint (``state_dict`` key) or the object itself.

    Args:
        obj: what ``torch.load`` returned.
        source: how the file is named in the message (e.g. ``"teacher_ckpt 'runs/t.ckpt'"``).
    """
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)} if isinstance(obj, Mapping) else {}
    # a module's extra state (e.g. connector shapes, key "..._extra_state") may sit beside the tensors
    others = [k for k, v in obj.items() if not isinstance(v, Tensor)] if isinstance(obj, Mapping) else []
    if not tensors or any(not str(k).endswith("_extra_state") for k in others):
        raise ValueError(
            f"{source} holds neither a Lightning checkpoint nor a state_dict of tensors; save the teacher with "
            "`torch.save(model.state_dict(), path)` or train it with ClassificationModule."
        )
    return {_strip_wrappers(k): v for k, v in tensors.items()}


def match_state_dict(
    state: Mapping[str, Tensor], model: nn.Module, source: str = "checkpoint", role: str = "model"
) -> dict[str, Tensor]:
    """Pick the key prefix under which ``state`` holds ``model``'s weights, and check it fits exactly. ``role``:
    what ``model`` is in the run (``teacher``, ``student``), for the message.

    Raises:
        ValueError: keys missing, unexpected or of the wrong shape; the message names a few of each.
    """
    target = model.state_dict()
    best: dict[str, Tensor] = {}
    for prefix in _OWNER_PREFIXES:
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if len(sub.keys() & target.keys()) > len(best.keys() & target.keys()):
            best = sub
    if not best:
        best = dict(state)
    missing = sorted(target.keys() - best.keys())
    unexpected = sorted(best.keys() - target.keys())
    wrong = [
        f"{k}: file {tuple(best[k].shape)} vs model {tuple(target[k].shape)}"
        for k in sorted(target.keys() & best.keys())
        if best[k].shape != target[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:4])})")
        if wrong:
            parts.append(f"{len(wrong)} with another shape (e.g. {'; '.join(wrong[:3])})")
        raise ValueError(
            f"{source} does not match the {role} {type(model).__name__}: "
            + ", ".join(parts)
            + f". Check that the {role}'s class_path/init_args are the ones the checkpoint was trained with."
        )
    return best


def load_weights(
    model: nn.Module,
    path: str | os.PathLike,
    what: str = "checkpoint",
    allow_pickle: bool = False,
    role: str = "model",
) -> nn.Module:
    """Load the weights in ``path`` into ``model`` (in place) and return it.

    The file is read with ``torch.load(weights_only=True)``: tensors and plain containers only, never
    arbitrary pickled objects. A file that needs full unpickling (an old checkpoint holding a pickled
    optimizer, say) is refused unless ``allow_pickle=True`` — only for a file you trust. A file that is not
    a ``torch.save`` archive at all (text, an empty or truncated file, a plain pickle) is refused before
    anything is unpickled, whatever ``allow_pickle`` says. The file is only read, never changed.

    Args:
        model: the network to fill.
        path: a Lightning checkpoint or a ``state_dict`` file.
        what: how the file is named in messages (e.g. ``"teacher_ckpt"``).
        allow_pickle: allow full unpickling.
        role: what ``model`` is in the run (``teacher``, ``student``), named when the weights do not fit it.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message says how to make one).
        IsADirectoryError: ``path`` is a folder (the message lists the checkpoints in it).
        ValueError: the file is empty, truncated, corrupted or not a PyTorch checkpoint; holds no tensors;
            does not fit ``model``; holds NaN or infinite weights; or needs unpickling and ``allow_pickle`` is off.
    """
    path = os.fspath(path)
    obj = _read_checkpoint(path, what, allow_pickle)
    source = f"{what} {path!r}"
    state = match_state_dict(extract_state_dict(obj, source=source), model, source=source, role=role)
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ValueError(
            f"{source} holds NaN or infinite weights in {', '.join(bad[:3])}{more} ({len(bad)} of {len(state)} "
            "tensors): the model it was saved from had diverged, and every output would be NaN. Re-train or "
            "re-export it from a healthy run, or point at an earlier checkpoint of that run."
        )
    model.load_state_dict(state, strict=True)
    return model


class PickledCheckpointError(ValueError):
    """A checkpoint holding pickled Python objects that a weights-only load refuses."""


_MISSING_TEACHER = (
    "Train a teacher first (e.g. `lightning-kd fit --config configs/digits/teacher.yaml`), or leave it unset to use "
    "the model as built. Reloading a distilled student elsewhere: DistillationModule.load_from_checkpoint(path, "
    "teacher_ckpt=None)."
)
_RESAVE = "re-save it with torch.save(model.state_dict(), path), or re-copy it from where it was made"


def _read_checkpoint(
    path: str, what: str, allow_pickle: bool, missing: str = _MISSING_TEACHER, resave: str = _RESAVE
) -> object:
    """``torch.load`` of ``path``, after checking that it is a file torch.save could have written. ``missing`` and
    ``resave`` are the remedies said for a missing file and for an unreadable one."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path!r} is a directory, not a checkpoint file; {_candidates(path)}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist. {missing}")
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise ValueError(f"{what} {path!r} is empty (0 bytes): the save or copy was interrupted; {resave}.")
    if not head.startswith(b"PK\x03\x04") and _LEGACY_MAGIC not in head[:32]:
        kind, fix = "", "point at the file that torch.save or a Trainer wrote"
        if head.startswith(b"version https://git-lfs"):
            kind, fix = "a Git LFS pointer, ", "run `git lfs pull` to fetch the real file"
        elif head.startswith(b"\x80"):  # pickle protocol 2+
            kind, fix = "a plain Python pickle, ", "if you trust it, unpickle it yourself and " + resave
        raise ValueError(
            f"{what} {path!r} is {kind}not a PyTorch checkpoint (torch.save writes a zip archive; this file "
            f"starts with {head[:16]!r}); {fix}."
        )
    check_sidecar(path, what)  # a published model's recorded sha256, when it has one
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower() or _legacy_truncated(path):  # broken stream, not a refused object
            raise ValueError(
                f"{what} {path!r} is not a readable PyTorch checkpoint (truncated or corrupted: {_reason(err)}); "
                f"{resave}."
            ) from err
        raise PickledCheckpointError(
            f"{what} {path!r}: not loaded: the file holds Python objects ({pickled_globals(err)}), which could run "
            "code when loaded. If you trust it: Teacher(model=..., ckpt=path, allow_pickle=True); or re-save just "
            "the weights: torch.save(model.state_dict(), 'weights.pt')."
        ) from err
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        if zipfile.is_zipfile(path):  # a whole zip archive, but not torch.save's layout
            problem = f"is a zip archive that torch.save did not write ({_reason(err)})"
        else:
            problem = f"is not a readable PyTorch checkpoint (truncated or corrupted: {_reason(err)})"
        raise ValueError(f"{what} {path!r} {problem}; {resave}.") from err


def pickled_globals(err: BaseException) -> str:
    """The Python names a refused weights-only load met (``argparse.Namespace``, ``posix.system``), for one line."""
    names = list(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", str(err))))
    return ", ".join(names[:3]) if names else "objects other than tensors and plain containers"


def _legacy_truncated(path: str) -> bool:
    """Whether a pre-1.6 (non-zip) torch.save file ends inside one of its five leading pickles (magic number,
    protocol, system info, the object, storage keys): a cut-off stream that the weights-only unpickler would
    report as a refused object. Parsed opcode by opcode, nothing is unpickled."""
    if zipfile.is_zipfile(path):
        return False
    with open(path, "rb") as f:
        try:
            for _ in range(5):
                for _ in pickletools.genops(f):
                    pass
        except ValueError:
            return True
    return False


def _checkpoint_files(folder: str) -> list[str]:
    """The checkpoint files in ``folder``, one level below, and in a run's ``version_<n>/checkpoints/``."""
    root = Path(folder)
    patterns = ("*", "*/*", "*/checkpoints/*")
    return sorted({str(p) for pattern in patterns for p in root.glob(pattern) if p.name.endswith(_CKPT_SUFFIXES)})


def _candidates(folder: str, where: str = "it") -> str:
    """A remedy listing the checkpoint files in ``folder`` (see :func:`_checkpoint_files`)."""
    found = _checkpoint_files(folder)
    if not found:
        return f"{where} holds no *.ckpt, *.pt or *.pth file; pass the path of the checkpoint file itself"
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    return f"pass one of the checkpoint files in {where}: {', '.join(found[:5])}{more}"


def read_run_checkpoint(path: str | os.PathLike, what: str = "--ckpt_path", trust: bool = False) -> dict | None:
    """The Lightning checkpoint at ``path`` (a run to resume, a model to evaluate), loaded weights-only after the
    checks :func:`load_weights` makes of a file — a folder, a missing file (naming the checkpoints beside it), a
    text file, a truncated one — with remedies for resuming. ``None`` when it holds pickled objects that only a
    full load reads and ``trust`` (``--weights_only false``) says to load anyway (Lightning's load then does).

    Raises:
        FileNotFoundError, IsADirectoryError, ValueError: as :func:`load_weights`; ValueError also for a plain
            ``state_dict``, which holds no training state to resume.
    """
    path = os.fspath(path)
    parent = os.path.dirname(path) or "."
    others = [f for f in _checkpoint_files(parent) if os.path.abspath(f) != os.path.abspath(path)]
    if not os.path.isdir(parent):
        missing = f"Check the path: its folder {parent!r} does not exist either (relative to {os.getcwd()})."
    else:
        close = difflib.get_close_matches(path, others, n=1, cutoff=0.6)
        more = f" and {len(others) - 5} more" if len(others) > 5 else ""
        missing = (f"Did you mean {close[0]!r}? " if close else "") + (
            f"Pass one of the checkpoint files in {parent}: {', '.join(others[:5])}{more}."
            if others
            else f"The folder {parent} holds no checkpoint file; pass the path of one (a run keeps them in "
            "version_<n>/checkpoints/)."
        )
    lasts = [f for f in others if os.path.basename(f) == "last.ckpt"]
    example = f" (e.g. {lasts[-1]})" if lasts else " (a run keeps them in version_<n>/checkpoints/last.ckpt)"
    resave = f"resume from another checkpoint{example}, or re-copy it from where it was made"
    try:
        ckpt = _read_checkpoint(path, what, False, missing=missing, resave=resave)
    except PickledCheckpointError as err:
        if trust:
            return None
        raise PickledCheckpointError(
            f"{what} {path!r}: not loaded: the file holds Python objects ({pickled_globals(err.__cause__ or err)}), "
            "which could run code when loaded. If you trust it, add --weights_only false."
        ) from None
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise ValueError(
            f"{what} {path!r} holds bare weights (a state_dict), not a Lightning checkpoint: there is no training "
            "state to resume. Pass a checkpoint a Trainer wrote (e.g. version_<n>/checkpoints/last.ckpt), or start "
            "a new run from these weights (as teacher_ckpt, or with lightning_kd.core.weights.load_weights)."
        )
    return dict(ckpt)


def _reason(err: BaseException) -> str:
    """The informative line of a torch.load error (its messages run to paragraphs)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    line = next((ln for ln in lines if ln.startswith("WeightsUnpickler error:")), lines[0] if lines else "")
    return line.split(". This is an internal")[0].split(". Please use")[0] or type(err).__name__
