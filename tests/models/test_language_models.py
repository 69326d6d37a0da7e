"""Building causal LMs for distillation: a folder loaded with the knobs real runs need (dtype, attention
implementation, gradient checkpointing), in train mode; LoRA adapters that leave only themselves trainable."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from lightning_kd.models import llama_lm, lora, pretrained_lm  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "model"
    llama_lm(64, hidden_size=32, num_layers=2, num_heads=2, seed=0).save_pretrained(path)
    return path


def test_pretrained_lm_loads_in_train_mode_with_the_asked_knobs(folder):
    model = pretrained_lm(folder, dtype="bfloat16", attn_implementation="eager", gradient_checkpointing=True)
    assert model.training and all(m.training for m in model.modules())  # from_pretrained alone: eval mode
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager" and model.is_gradient_checkpointing
    plain = pretrained_lm(folder)
    assert next(plain.parameters()).dtype == torch.float32 and not plain.is_gradient_checkpointing
    with pytest.raises(ValueError, match="dtype='fp8' is not one of"):
        pretrained_lm(folder, dtype="fp8")
    with pytest.raises(FileNotFoundError, match=r"is not a transformers model folder \(it does not exist\)"):
        pretrained_lm(folder.parent / "absent")


def test_lora_leaves_only_its_adapters_trainable_and_trains_under_gradient_checkpointing(folder):
    model = lora(pretrained_lm(folder, gradient_checkpointing=True), r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(("q_proj" in n or "v_proj" in n) for n in trainable)
    ids = torch.randint(0, 64, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()  # checkpointed layers over frozen embeddings still backprop
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    # B starts at zero (the update starts at zero), so the first gradient reaches B; A's is B^T-scaled: zero
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)
    with pytest.raises(ValueError, match="lora: r must be a positive int"):
        lora(pretrained_lm(folder), r=0)
