"""Configs the CLI writes can be read again somewhere else, and config files that would lose a value silently are
refused: ``--print_config`` keeps the run folder as ``${trainer.default_root_dir}``; a key given twice in one
YAML block is named with both lines."""

from __future__ import annotations

import pytest
import yaml

from lightning_kd.apps.cli import main
from lightning_kd.apps.config_files import refuse_duplicate_keys
from tests.helpers import REPO

KD = [f"--config={REPO / 'configs/digits/base.yaml'}", f"--config={REPO / 'configs/digits/kd.yaml'}"]
QUICK = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]


def test_a_printed_config_refits_into_the_folder_the_user_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["fit", *KD, "--print_config"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    config = yaml.safe_load(printed)
    assert config["trainer"]["logger"]["init_args"]["save_dir"] == "${trainer.default_root_dir}"
    assert config["trainer"]["default_root_dir"] == "runs/digits/kd"
    (tmp_path / "printed.yaml").write_text(printed)
    main(["fit", "--config=printed.yaml", "--trainer.default_root_dir=elsewhere", "--model.init_args.teacher_ckpt=null"]
         + QUICK + ["--trainer.enable_progress_bar=false"])  # fmt: skip
    assert (tmp_path / "elsewhere/model.ckpt").is_file()
    assert (tmp_path / "elsewhere/version_0/checkpoints/last.ckpt").is_file()
    assert not (tmp_path / "runs").exists()  # nothing in the folder of the printed run
    saved = yaml.safe_load((tmp_path / "elsewhere/version_0/config.yaml").read_text())
    assert saved["trainer"]["logger"]["init_args"]["save_dir"] == "${trainer.default_root_dir}"


def test_a_key_given_twice_in_one_block_is_refused_with_both_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "two.yaml").write_text("trainer:\n  max_epochs: 2\nmodel:\n  init_args: {alpha: 0.5}\ntrainer: {}\n")
    with pytest.raises(SystemExit):
        main(["fit", *KD, "--config", "two.yaml"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        "lightning-kd: error: ValueError: two.yaml:5: the key 'trainer' is given twice in one block (first at line 1); "
        "YAML keeps only the last, so what line 1 gives would be dropped without a word. Give it once: merge the two "
        "into one."
    ) in err


def test_nested_duplicates_are_found_and_one_name_in_two_blocks_is_fine(tmp_path):
    nested = tmp_path / "nested.yaml"
    nested.write_text("trainer:\n  max_epochs: 2\n  callbacks: []\n  max_epochs: 3\n")
    with pytest.raises(ValueError, match=r"nested.yaml:4: the key 'max_epochs' is given twice in one block \(first at"):
        refuse_duplicate_keys(nested)
    fine = tmp_path / "fine.yaml"
    fine.write_text("model:\n  init_args: {a: 1}\ndata:\n  init_args: {a: 2}\n")
    refuse_duplicate_keys(fine)  # the same key in two blocks is two keys
    refuse_duplicate_keys(tmp_path / "missing.yaml")  # left to the parser, which names it
