"""Shared set-ups of the fault catalogue: tiny models, tiny recipes, a trained teacher, copies of the data."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from tools.faults.harness import REPO, Case, Skip

DIGITS = REPO / "configs" / "digits"
FASHION = REPO / "configs" / "fashion_mnist"
FMNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
TINY = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.limit_predict_batches=1",
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
]
KILL_EPOCHS = 60  # the killed run asks for this many (tiny) epochs: time enough to kill it a few epochs in
KILL_AFTER_EPOCH = 2  # ... once its last.ckpt holds this epoch
Trigger = Callable[[], Any]


# -- shared set-ups ---------------------------------------------------------------------------------------------
def teacher_net(seed: int = 0) -> torch.nn.Module:
    from lightning_kd.models import SmallCNN

    torch.manual_seed(seed)
    return SmallCNN(1, 10, widths=(4, 8, 8))


def student_net() -> torch.nn.Module:
    from lightning_kd.models import MLP

    torch.manual_seed(0)
    return MLP(64, 10, hidden=(16,))


def kd(**kwargs: Any) -> Any:
    from lightning_kd import DistillationModule

    return DistillationModule(teacher_net(), student_net(), **kwargs)


def digits(**kwargs: Any) -> Any:
    from lightning_kd.data import DigitsDataModule

    return DigitsDataModule(batch_size=32, **kwargs)


def trainer(**kwargs: Any) -> L.Trainer:
    """A tiny, quiet Trainer: 2 training batches, 1 validation batch, no logger, no checkpoints."""
    settings = dict(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**settings, **kwargs})


_TEACHER_BYTES: list[bytes] = []


def teacher_ckpt(c: Case, name: str = "teacher.ckpt") -> str:
    """A ClassificationModule checkpoint of the tiny teacher, as ``lightning-kd fit ... teacher.yaml`` publishes it
    (trained once per process, copied into the case)."""
    if not _TEACHER_BYTES:
        tmp = Path(tempfile.mkdtemp(prefix="kd-teacher-"))
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            Case(tmp).cli("fit", *recipe(None, "teacher"))
            _TEACHER_BYTES.append((tmp / "runs" / "teacher" / "model.ckpt").read_bytes())
        finally:
            os.chdir(cwd)
            shutil.rmtree(tmp, ignore_errors=True)
    Path(name).write_bytes(_TEACHER_BYTES[0])
    return name


def recipe(c: Case | None, fragment: str = "kd", root: str | None = None) -> list[str]:
    """``--config configs/digits/base.yaml --config configs/digits/<fragment>.yaml`` with tiny models, a few steps,
    the run under ``runs/<root or fragment>``, and (for KD) the tiny teacher's checkpoint."""
    args = ["--config", str(DIGITS / "base.yaml"), "--config", str(DIGITS / f"{fragment}.yaml"), *TINY]
    if fragment == "teacher":
        args.append("--model.init_args.model.init_args.widths=[4,8,8]")
    elif fragment == "student":
        args.append("--model.init_args.model.init_args.hidden=[16]")
    else:
        args += [
            "--model.init_args.teacher.init_args.widths=[4,8,8]",
            "--model.init_args.student.init_args.hidden=[16]",
        ]
        args.append(f"--model.init_args.teacher_ckpt={teacher_ckpt(c)}")
    return [*args, f"--trainer.default_root_dir=runs/{root or fragment}"]


def healthy(c: Case, fragment: str = "kd", *extra: str) -> Path:
    """A healthy tiny run under ``runs/<fragment>``; returns the model it published."""
    c.cli("fit", *recipe(c, fragment), *extra)
    return Path("runs") / fragment / "model.ckpt"


def fashion_dir(c: Case, name: str = "fm") -> Path:
    """A folder with the four Fashion-MNIST files (symbolic links to the shared copy, so corrupting one means
    replacing its link by a file)."""
    src = Path(os.environ.get("LIGHTNING_KD_FASHION_MNIST") or REPO.parent / "shared" / "data" / "fashion-mnist")
    if not all((src / f"{stem}.gz").is_file() for stem in FMNIST_FILES):
        raise Skip(f"Fashion-MNIST files not found in {src} (set LIGHTNING_KD_FASHION_MNIST)")
    folder = Path(name)
    folder.mkdir()
    for stem in FMNIST_FILES:
        (folder / f"{stem}.gz").symlink_to(src / f"{stem}.gz")
    return folder


def fashion_args(data_dir: Path) -> list[str]:
    """The Fashion-MNIST student recipe, tiny: SmallCNN 4/8/8, batch 16, fp32, a few steps."""
    return [
        "--config",
        str(FASHION / "base.yaml"),
        "--config",
        str(FASHION / "student.yaml"),
        *TINY,
        "--trainer.precision=32-true",
        "--data.init_args.batch_size=16",
        "--model.init_args.model.init_args.widths=[4,8,8]",
        "--trainer.default_root_dir=runs/fashion",
        f"--data.init_args.data_dir={data_dir}",
    ]


def no_other_fashion_folders(c: Case) -> None:
    """Fashion-MNIST is looked for in data_dir, then $LIGHTNING_KD_FASHION_MNIST, then a Debian folder: keep the
    fault to the folder it is about."""
    import lightning_kd.data.fashion_mnist as fm

    c.setenv(fm.ENV_VAR, None)
    c.setattr(fm, "DEBIAN_DIR", str(Path("no-debian-folder").resolve()))


def replace_link(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


class InterruptAt(L.Callback):
    """Raises ``KeyboardInterrupt`` (what Ctrl-C does) after training step ``step``."""

    def __init__(self, step: int = 2) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


def labelled(change: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """An in-memory data module of 64 random 8×8 images whose labels ``change`` rewrites."""
    from lightning_kd.data.base import InMemoryDataModule

    class Labelled(InMemoryDataModule):
        def __init__(self) -> None:
            super().__init__(batch_size=32)

        def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
            g = torch.Generator().manual_seed(0)
            x, y = change(torch.rand(64, 1, 8, 8, generator=g), torch.arange(64) % 10)
            return {"train": (x, y), "val": (x, y), "test": (x, y)}

    return Labelled()


def loaders(x: torch.Tensor, y: torch.Tensor) -> tuple[DataLoader, DataLoader]:
    return DataLoader(TensorDataset(x, y), batch_size=32), DataLoader(TensorDataset(x, y), batch_size=32)


def pipeline_file(stages: list[dict[str, Any]], name: str = "pipeline.yaml") -> str:
    Path(name).write_text(yaml.safe_dump({"out_dir": "runs/pipeline", "stages": stages}))
    return name


STUDENT_STAGE = {
    "name": "gen0",
    "config": [str(DIGITS / "base.yaml"), str(DIGITS / "student.yaml")],
    "args": [*TINY, "--model.init_args.model.init_args.hidden=[16]"],
}


def checkpoint_epoch(path: Path | str) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["epoch"]
