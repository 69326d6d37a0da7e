"""A user's own models: students loaded with ``from_pretrained`` train with dropout, the chunked head check passes
a dropout student, LoRA students train on the chunked path with only their adapters, and the saved folder holds
the tokenizer the run used, the merged model and the adapter."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from lightning_kd.callbacks import SaveLanguageModel  # noqa: E402
from lightning_kd.core.lm import check_head_matches  # noqa: E402
from lightning_kd.data.text import PackedTextDataModule  # noqa: E402
from lightning_kd.models import lora, pretrained_lm  # noqa: E402
from lightning_kd.modules.causal_lm import CausalLMDistillation, CausalLMModule  # noqa: E402
from tests.lm_families import family_config, family_tokenizer  # noqa: E402
from tests.lm_helpers import trainer, write_corpus  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A GPT-2 teacher and a GPT-2 student with dropout 0.1 (as GPT-2 ships), saved beside their tokenizer."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("own")
    write_corpus(root / "corpus")
    tok = family_tokenizer("gpt2", root / "corpus")
    out = {"root": root}
    for name, width, layers, seed in (("teacher", 48, 2, 1), ("student", 32, 1, 2)):
        torch.manual_seed(seed)
        config = family_config("gpt2", tok, width, layers)
        config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.1
        AutoModelForCausalLM.from_config(config).save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = root / name
    return out


def _data(folders, tmp_path) -> PackedTextDataModule:
    return PackedTextDataModule(
        text_dir=str(folders["root"] / "corpus"), pattern="*.py", tokenizer=str(folders["student"]), seq_len=16,
        batch_size=4, val_fraction=0.3, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip


class DropoutWatch(L.Callback):
    """Whether the student's dropout layers are active, in each training and validation step."""

    def __init__(self):
        self.train, self.val = [], []

    def _active(self, module) -> bool:
        return all(m.training for m in module.student.modules() if isinstance(m, torch.nn.Dropout))

    def on_train_batch_start(self, trainer, module, *args):
        self.train.append(self._active(module))

    def on_validation_batch_start(self, trainer, module, *args):
        self.val.append(self._active(module))


def test_a_student_loaded_in_eval_mode_trains_with_dropout_and_validates_without(folders, tmp_path):
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(folders["student"])  # transformers returns eval mode
    assert not student.training
    module = CausalLMDistillation(pretrained_lm(folders["teacher"]), student, alpha=0.5)  # chunked: head checked
    watch = DropoutWatch()
    trainer(tmp_path, max_steps=3, val_check_interval=1, limit_val_batches=1, callbacks=[watch]).fit(
        module, _data(folders, tmp_path)
    )
    assert watch.train == [True] * 3 and watch.val and not any(watch.val)
    assert not module.teacher.training and not any(m.training for m in module.teacher.model.modules())


def test_the_head_check_compares_a_dropout_model_with_itself():
    """Two forward passes in train mode draw different dropout masks; the check runs both in eval mode (and puts
    the modes back), so a dropout student passes while a head that is not hidden @ W.T is still caught."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=2, n_positions=32)).train()
    inputs = {"input_ids": torch.randint(0, 50, (2, 9))}
    check_head_matches(model, inputs, "student")
    assert all(m.training for m in model.modules())
    original = model.forward

    def scaled(*args, **kwargs):
        out = original(*args, **kwargs)
        out.logits = out.logits * 2.0
        return out

    model.forward = scaled
    with pytest.raises(ValueError, match="computes its logits in a way the chunked loss does not reproduce"):
        check_head_matches(model, inputs, "student")


def test_a_lora_student_trains_its_adapters_only_on_the_chunked_path_and_saves_merged_and_adapter(folders, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    student = lora(pretrained_lm(folders["student"]), r=4, target_modules=["c_attn", "c_proj"])
    base_before = {k: v.clone() for k, v in student.get_base_model().state_dict().items() if "lora_" not in k}
    module = CausalLMDistillation(pretrained_lm(folders["teacher"]), student, alpha=0.5)  # chunk_size 256
    saver = SaveLanguageModel(folder=str(tmp_path / "saved"), num_samples=1, max_new_tokens=3)
    t = trainer(tmp_path, max_steps=3, limit_val_batches=1, val_check_interval=3, callbacks=[saver])
    t.fit(module, _data(folders, tmp_path))
    trained = {id(p) for group in t.optimizers[0].param_groups for p in group["params"]}
    adapters = {id(p) for n, p in student.named_parameters() if "lora_" in n}
    assert trained == adapters and adapters
    after = student.get_base_model().state_dict()
    assert all(torch.equal(after[k], v) for k, v in base_before.items())  # the base weights stayed frozen
    # the saved folder: a merged model Auto* load alone, giving the adapted student's logits; the adapter beside it
    folder = saver.saved
    merged, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    x = torch.tensor([tok("def alpha_1(x):")["input_ids"]])
    student.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=x).logits, student(input_ids=x).logits, rtol=1e-4, atol=1e-4)
    config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    relative = config["base_model_name_or_path"]
    assert not relative.startswith("/") and config["lightning_kd_base_model_path"] == str(folders["student"].resolve())
    moved = (folder / "adapter" / relative).resolve()
    assert moved == folders["student"].resolve()
    again = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(moved), folder / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=x).logits, student(input_ids=x).logits, rtol=1e-4, atol=1e-4)


def test_saving_without_a_data_module_ships_the_model_folders_tokenizer(folders, tmp_path):
    from transformers import AutoTokenizer

    dm = _data(folders, tmp_path)
    dm.setup()
    batches = torch.utils.data.DataLoader([dm.splits["train"].__getitems__([0, 1])], batch_size=None)
    saver = SaveLanguageModel(folder=str(tmp_path / "saved"), num_samples=0)
    t = trainer(tmp_path, max_steps=1, limit_val_batches=0, callbacks=[saver])
    t.fit(CausalLMModule(pretrained_lm(folders["student"])), train_dataloaders=batches)
    tok = AutoTokenizer.from_pretrained(saver.saved)
    assert tok("def alpha_1(x):")["input_ids"] == dm.tokenizer("def alpha_1(x):")["input_ids"] != []
    # a model built here, trained on bare batches: nothing says its tokenizer, and the callback says so
    from lightning_kd.models import llama_lm

    saver = SaveLanguageModel(folder=str(tmp_path / "bare"), num_samples=0)
    with pytest.warns(UserWarning, match="no tokenizer to save with the model"):
        trainer(tmp_path, max_steps=1, limit_val_batches=0, callbacks=[saver]).fit(
            CausalLMModule(llama_lm(len(dm.tokenizer), hidden_size=32, num_layers=1, num_heads=2)),
            train_dataloaders=batches,
        )


def test_a_saved_folder_lists_its_files_sha256_and_a_changed_one_is_refused_before_training(folders, tmp_path):
    dm = _data(folders, tmp_path)
    dm.setup()
    batches = torch.utils.data.DataLoader([dm.splits["train"].__getitems__([0, 1])], batch_size=None)
    saver = SaveLanguageModel(folder=str(tmp_path / "saved"), num_samples=0)
    trainer(tmp_path, max_steps=1, limit_val_batches=0, callbacks=[saver]).fit(
        CausalLMModule(pretrained_lm(folders["student"])), train_dataloaders=batches
    )
    sums = (saver.saved / "SHA256SUMS").read_text().splitlines()
    listed = sorted(line.split("  ", 1)[1] for line in sums)
    on_disk = sorted(p.relative_to(saver.saved).as_posix() for p in saver.saved.rglob("*") if p.is_file())
    assert listed == [name for name in on_disk if name != "SHA256SUMS"] and "config.json" in listed
    # the saved student, a file changed since: refused at setup, before any step, naming the file
    model = pretrained_lm(saver.saved)
    with open(saver.saved / "generation_config.json", "a") as f:
        f.write(" ")
    module = CausalLMModule(model)
    with pytest.raises(ValueError, match=r"the model's model folder .* \(changed or damaged: generation_config.json;"):
        trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(module, train_dataloaders=batches)
    assert module.global_step == 0
    (saver.saved / "SHA256SUMS").unlink()  # changed on purpose: the record goes, and the folder is read as it is
    trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(module, train_dataloaders=batches)
