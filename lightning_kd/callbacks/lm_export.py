"""SaveLanguageModel: when ``fit`` ends, the trained causal LM as a ``transformers`` folder, and a few samples."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from lightning_kd.core.digest import write_manifest
from lightning_kd.models.language import VOCAB_FINGERPRINT_KEY, model_folder

ADAPTER_FOLDER = "adapter"
"""Where :func:`save_language_model` puts a ``peft`` model's adapter, beside the merged model."""


def is_adapter_model(model: nn.Module) -> bool:
    """Whether ``model`` is a ``peft`` model (adapters on a base model)."""
    return callable(getattr(model, "merge_and_unload", None)) and hasattr(model, "peft_config")


def save_language_model(model: nn.Module, folder: str | os.PathLike, tokenizer: Any = None) -> Path:
    """Write ``model`` (and ``tokenizer``) with ``save_pretrained``: loadable with ``AutoModelForCausalLM`` and
    ``AutoTokenizer`` alone. The vocabulary's fingerprint goes into ``config.json``
    (``lightning_kd_vocab_fingerprint``), so a later distillation can check the vocabulary by identity.

    A ``peft`` model (LoRA) is written twice: merged into its base in ``folder`` (the adapters folded into the
    weights: a plain model, nothing but ``transformers`` needed) and as the adapter alone in
    ``folder/adapter`` (``PeftModel.from_pretrained(base, folder/adapter)``), whose ``base_model_name_or_path``
    is made relative to that folder when the base is a local folder (the absolute path stays recorded as
    ``lightning_kd_base_model_path``), so the pair can be moved together.

    Args:
        model: a ``transformers`` causal LM, or a ``peft`` model around one.
        folder: a new or empty folder; an existing non-empty one is refused (nothing is overwritten).
        tokenizer: a ``tokenizers.Tokenizer`` trained here (wrapped for transformers) or a transformers tokenizer.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} already holds files; choose a new folder (nothing is overwritten).")
    adapter = model if is_adapter_model(model) else None
    if adapter is not None:
        model = copy.deepcopy(adapter).merge_and_unload()  # the live model keeps its adapters
    if tokenizer is not None and not hasattr(tokenizer, "save_pretrained"):
        from lightning_kd.data.tokenizer import as_transformers_tokenizer

        tokenizer = as_transformers_tokenizer(tokenizer, getattr(model.config, "max_position_embeddings", None))
    if tokenizer is not None:
        from lightning_kd.data.tokenizer import vocab_fingerprint

        setattr(model.config, VOCAB_FINGERPRINT_KEY, vocab_fingerprint(tokenizer))
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        model.config.eos_token_id = eos
        model.config.pad_token_id = pad
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.eos_token_id = eos
            model.generation_config.pad_token_id = pad
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    if adapter is not None:
        _save_adapter(adapter, folder / ADAPTER_FOLDER)
    # SHA256SUMS: a distillation that loads this folder checks every file against it first
    write_manifest(folder, [p.relative_to(folder) for p in sorted(folder.rglob("*")) if p.is_file()])
    return folder


def _save_adapter(adapter: nn.Module, folder: Path) -> None:
    base = model_folder(adapter)
    adapter.save_pretrained(folder)
    config_path = folder / "adapter_config.json"
    if base is None or not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    config["lightning_kd_base_model_path"] = str(base.resolve())
    config["base_model_name_or_path"] = os.path.relpath(base.resolve(), folder.resolve())
    config_path.write_text(json.dumps(config, indent=2))


def generate_samples(
    model: nn.Module, tokenizer: Any, prompts: list[list[int]], max_new_tokens: int = 48
) -> list[tuple[str, str]]:
    """``(prompt text, greedy continuation)`` for each prompt (token ids), from ``model.generate``."""
    decode = tokenizer.decode
    out = []
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        for ids in prompts:
            x = torch.tensor([ids], device=device)
            with torch.no_grad():
                y = model.generate(
                    input_ids=x,
                    attention_mask=torch.ones_like(x),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=model.config.pad_token_id,
                )
            out.append((decode(ids), decode(y[0, len(ids) :].tolist())))
    finally:
        model.train(was_training)
    return out


class SaveLanguageModel(L.Callback):
    """At the end of a successful ``fit``, on rank zero: the trained LM (a ``CausalLMModule``'s model, a
    ``CausalLMDistillation``'s student) as a ``transformers`` folder with the data module's tokenizer, and
    greedy samples from the first tokens of validation sequences written to ``samples.md`` in that folder.

    Args:
        folder: where to save; ``None``: ``<trainer.log_dir>/hf_model`` (one per run version).
        num_samples: validation prompts to continue (0: none).
        prompt_tokens: tokens of each prompt.
        max_new_tokens: tokens generated per sample.
    """

    def __init__(
        self, folder: str | None = None, num_samples: int = 3, prompt_tokens: int = 24, max_new_tokens: int = 48
    ) -> None:
        self.folder, self.num_samples = folder, num_samples
        self.prompt_tokens, self.max_new_tokens = prompt_tokens, max_new_tokens
        self.saved: Path | None = None

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run or trainer.interrupted:
            return
        network = getattr(pl_module, "lm_network", None)
        if not callable(network):
            rank_zero_warn(f"SaveLanguageModel: {type(pl_module).__name__} is not a causal-LM module; nothing saved.")
            return
        model = network()
        dm = trainer.datamodule
        tokenizer = run_tokenizer(dm, model)
        if tokenizer is None:
            rank_zero_warn(
                "SaveLanguageModel: no tokenizer to save with the model (the data module has none and the model was "
                "not loaded from a folder with one): AutoTokenizer cannot load the saved folder until you copy the "
                "tokenizer files the data was encoded with into it."
            )
        root = Path(trainer.log_dir or trainer.default_root_dir)
        folder = Path(self.folder) if self.folder is not None else root / "hf_model"
        try:
            save_language_model(model, folder, tokenizer)
        except FileExistsError as err:
            rank_zero_warn(f"SaveLanguageModel: {err} The trained model is in the run's checkpoints.")
            return
        self.saved = folder
        rank_zero_info(f"lightning-kd: saved the language model to {folder} (AutoModelForCausalLM.from_pretrained)")
        if self.num_samples and tokenizer is not None:
            self._write_samples(model, folder, dm)

    def _write_samples(self, model: nn.Module, folder: Path, dm: Any) -> None:
        if dm is None or not callable(getattr(dm, "val_dataloader", None)):
            return
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        batch = next(iter(dm.val_dataloader()))
        prompts = [row[: self.prompt_tokens].tolist() for row in batch["input_ids"][: self.num_samples]]
        lines = ["# Samples (greedy)", ""]
        for prompt, text in generate_samples(model, tokenizer, prompts, self.max_new_tokens):
            lines += ["**Prompt**", "", "```", prompt, "```", "", "**Continuation**", "", "```", text, "```", ""]
        (folder / "samples.md").write_text("\n".join(lines), encoding="utf-8")


def run_tokenizer(datamodule: Any, model: nn.Module) -> Any:
    """The tokenizer a run used: its data module's, else the one in the folder the model was loaded from."""
    tokenizer = getattr(datamodule, "tokenizer", None)
    if tokenizer is not None:
        return tokenizer
    source = model_folder(model)
    if source is not None and any((source / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    return None
