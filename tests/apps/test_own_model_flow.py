"""A user's flow from the README's lines: model folders + chat JSONL → ``lightning-kd fit`` → a saved student folder
that ``AutoModelForCausalLM`` / ``AutoTokenizer`` load and generate from (full fine-tuning and LoRA)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from lightning_kd.apps.cli import main  # noqa: E402
from tests.helpers import REPO  # noqa: E402
from tests.lm_families import family_tokenizer, model_folder  # noqa: E402
from tests.lm_helpers import write_corpus  # noqa: E402


def _chat(i: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You write Python."},
            {"role": "user", "content": f"Write f_{i}."},
            {"role": "assistant", "content": f"def f_{i}(x):\n    return x + {i}"},
        ]
    }


@pytest.mark.parametrize("variant", ["full", "lora"])
def test_folders_and_chat_jsonl_to_a_saved_student_that_auto_loads_and_generates(tmp_path, monkeypatch, variant):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.chdir(tmp_path)
    write_corpus(tmp_path / "corpus")
    tok = family_tokenizer("qwen", tmp_path / "corpus")
    teacher = model_folder(tmp_path / "models", "qwen2", 1, width=48, layers=2, tok=tok)
    student = model_folder(tmp_path / "models", "qwen2", 2, tok=tok)
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(_chat(i)) for i in range(16)), encoding="utf-8")
    (tmp_path / "val.jsonl").write_text("\n".join(json.dumps(_chat(i)) for i in range(16, 20)), encoding="utf-8")
    where = "student.init_args.model" if variant == "lora" else "student"
    recipe = REPO / "configs" / "lm" / "own"
    main([
        "fit", "--config", str(recipe / "base.yaml"), "--config", str(recipe / f"{variant}.yaml"),
        f"--model.init_args.teacher.init_args.path={teacher}", f"--model.init_args.{where}.init_args.path={student}",
        f"--data.init_args.tokenizer={student}", "--data.init_args.train_file=train.jsonl",
        "--data.init_args.val_file=val.jsonl", "--data.init_args.batch_size=4", "--trainer.max_steps=3",
        "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1", "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
    ])  # fmt: skip
    saved = next((tmp_path / "runs" / "lm_own" / variant).glob("version_*/hf_model"))
    model, loaded_tok = AutoModelForCausalLM.from_pretrained(saved), AutoTokenizer.from_pretrained(saved)
    assert loaded_tok.chat_template == tok.chat_template and loaded_tok.get_vocab() == tok.get_vocab()
    prompt = loaded_tok.apply_chat_template(_chat(3)["messages"][:2], add_generation_prompt=True, return_tensors="pt")
    ids = prompt["input_ids"] if not torch.is_tensor(prompt) else prompt
    out = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    assert (saved / "adapter" / "adapter_config.json").is_file() == (variant == "lora")
    assert (tmp_path / "runs" / "lm_own" / variant / "model.ckpt").is_file()
