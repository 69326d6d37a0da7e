"""What the four Hinton et al. (2015) notebooks share: the digits models, a quiet CPU trainer, data subsets,
evaluation on whole splits, the validation-chosen bias correction, and result files.

Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015, arXiv:1503.02531.

The notebooks (``hinton_temperature``, ``hinton_few_data``, ``hinton_omitted_class``,
``hinton_label_smoothing``) import it from this folder; each keeps its experiment — which module is trained on
which data with which knobs — in the notebook itself. The models and optimiser are those of
``configs/digits/``: teacher ``SmallCNN(1, 10, widths=(32, 64, 128))`` (94,186 parameters), student
``MLP(64, 10, hidden=(32,))`` (2,410 parameters), Adam with learning rate 3e-3.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd import ClassificationModule, DistillationModule
from lightning_kd.data import DigitsDataModule, TensorClassificationDataset
from lightning_kd.models import MLP, SmallCNN

ROOT = Path(__file__).resolve().parents[1]  # the repository: relative OUT_DIR / FIGURE paths start here
NUM_CLASSES = 10
LR = 3e-3


def setup_cpu(threads: int = 1) -> None:
    """One torch thread (these models are tiny: more threads only add synchronisation, and on a busy 2-core
    machine they make a run many times slower), and no Lightning chatter in the notebook's output."""
    torch.set_num_threads(threads)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*configure_callbacks.*")
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # the frozen teacher, on purpose


def repo_path(path: str | Path) -> Path:
    """``path`` itself when absolute, else relative to the repository root (not to the kernel's folder)."""
    path = Path(path)
    return path if path.is_absolute() else ROOT / path


def teacher_net() -> nn.Module:
    return SmallCNN(1, NUM_CLASSES, widths=(32, 64, 128))


def student_net() -> nn.Module:
    return MLP(64, NUM_CLASSES, hidden=(32,))


def adam(params: Iterable[Tensor]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=LR)


def make_trainer(epochs: int, callbacks: Sequence[L.Callback] = (), root: str | Path | None = None) -> L.Trainer:
    """A quiet CPU trainer. No validation loop: nothing here selects on validation during training (the
    omitted-class notebook uses the validation split afterwards, for the bias only)."""
    return L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
        default_root_dir=None if root is None else str(root),
    )


def seed(value: int) -> None:
    """Seed Python, NumPy and torch. Call it *before* building a module: the seed fixes the initial weights
    and the training order (the data module's sampler reads ``torch.initial_seed()``)."""
    L.seed_everything(value, verbose=False)


def fit(module: L.LightningModule, data: L.LightningDataModule, epochs: int, **kw: Any) -> L.LightningModule:
    """Train ``module`` on ``data`` for ``epochs`` (``kw``: :func:`make_trainer`'s ``callbacks``/``root``)."""
    make_trainer(epochs, **kw).fit(module, datamodule=data)
    return module


def train_teacher(data: L.LightningDataModule, epochs: int, seed_value: int) -> nn.Module:
    """Train the SmallCNN teacher with cross-entropy; return the network, in eval mode, to pass as ``teacher=``."""
    seed(seed_value)
    module = fit(ClassificationModule(teacher_net(), optimizer=adam), data, epochs)
    return module.model.eval()


def load_digits(batch_size: int = 64, seed: int = 0) -> DigitsDataModule:
    """scikit-learn's digits with the library's stratified 70/10/20 split (seeded by ``seed``), set up."""
    data = DigitsDataModule(batch_size=batch_size, seed=seed)
    data.setup()
    return data


def with_train_subset(data: DigitsDataModule, index: Tensor, batch_size: int | None = None) -> DigitsDataModule:
    """A copy of ``data`` whose training split holds only the samples ``index`` of ``data``'s training split;
    validation and test are the very same tensors. (``setup`` loads only when ``splits`` is empty, so the
    Trainer keeps the subset.)"""
    out = DigitsDataModule(batch_size=batch_size or data.batch_size, seed=data.seed)
    out.splits = dict(data.splits)
    train = data.splits["train"]
    out.splits["train"] = TensorClassificationDataset(train.images[index], train.labels[index])
    return out


def stratified_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Sorted indices of ``fraction`` of the samples of every class (at least one each), drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        take = max(1, round(fraction * len(members)))
        picked.append(members[torch.randperm(len(members), generator=generator)[:take]])
    return torch.cat(picked).sort().values


def network(module: L.LightningModule) -> nn.Module:
    """The trained network: a DistillationModule's student, a ClassificationModule's model."""
    return module.student if isinstance(module, DistillationModule) else module.model


@torch.no_grad()
def logits_of(net: nn.Module, split: TensorClassificationDataset) -> Tensor:
    """``net``'s logits for a whole split, in eval mode (its mode is restored)."""
    was_training = net.training
    net.eval()
    try:
        return net(split.images).float()
    finally:
        net.train(was_training)


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def per_class_accuracy(logits: Tensor, labels: Tensor) -> list[float]:
    right = logits.argmax(1) == labels
    return [float(right[labels == c].float().mean()) for c in range(NUM_CLASSES)]


class EpochCurves(L.Callback):
    """After every training epoch, the trained network's accuracy and cross-entropy on whole splits.

    ``history[name]`` is ``{"acc": [...], "loss": [...]}``, one entry per epoch. It only reads: nothing is
    selected on these numbers."""

    def __init__(self, splits: dict[str, TensorClassificationDataset]) -> None:
        self.splits = splits
        self.history = {name: {"acc": [], "loss": []} for name in splits}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net = network(pl_module)
        for name, split in self.splits.items():
            logits = logits_of(net, split)
            self.history[name]["acc"].append(accuracy(logits, split.labels))
            self.history[name]["loss"].append(float(F.cross_entropy(logits, split.labels)))


def share_matching_bias(logits: Tensor, cls: int, share: float) -> float:
    """The constant to add to class ``cls``'s logit so that the model predicts ``cls`` for ``share`` of the rows.

    A row is predicted as ``cls`` once the bias exceeds its margin ``max_{k≠cls} z_k − z_cls``. With the margins
    sorted and ``n = round(share · N)``, the bias is halfway between the n-th and the (n+1)-th smallest margin:
    exactly ``n`` rows then predict ``cls`` (ties aside). Negative when the model over-predicts ``cls``.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    others = logits.clone()
    others[:, cls] = -math.inf
    margins = (others.max(1).values - logits[:, cls]).sort().values
    n = round(share * len(margins))
    if n == 0:
        return float(margins[0]) - 1.0
    if n == len(margins):
        return float(margins[-1]) + 1.0
    return float((margins[n - 1] + margins[n]) / 2)


def predicted_share(logits: Tensor, cls: int) -> float:
    return float((logits.argmax(1) == cls).float().mean())


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy (nats) of the distributions along the last dimension."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: Sequence[float]) -> str:
    """``mean ± std`` of accuracies, four decimals."""
    m, s = mean_std(values)
    return f"{m:.4f} ± {s:.4f}"


def summary(values: Sequence[float]) -> dict[str, Any]:
    m, s = mean_std(values)
    return {"per_seed": [float(v) for v in values], "mean": m, "std": s}


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def save_results(out_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write ``results`` as ``<out_dir>/results.json`` (folders created); return the path."""
    path = repo_path(out_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def save_figure(fig: Any, path: str | Path, dpi: int = 80) -> Path:
    """Save ``fig`` as a PNG at ``path`` (folders created); return the path."""
    path = repo_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path
