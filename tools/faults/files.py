"""Faults in files: data files, teacher checkpoints, recipes; checkpoints given to resume or evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tools.faults.harness import Case, fault
from tools.faults.setups import (
    Trigger,
    digits,
    fashion_args,
    fashion_dir,
    healthy,
    no_other_fashion_folders,
    recipe,
    replace_link,
    student_net,
    teacher_net,
    trainer,
)


# -- files ------------------------------------------------------------------------------------------------------
@fault(
    "file",
    r"Fashion-MNIST files not found.*missing t10k-labels-idx1-ubyte",
    bad=("t10k-labels-idx1-ubyte",),
)
def fashion_file_missing(c: Case) -> Trigger:
    """Fashion-MNIST data_dir without t10k-labels-idx1-ubyte.gz"""
    folder = fashion_dir(c)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    no_other_fashion_folders(c)
    return lambda: c.cli("fit", *fashion_args(folder))


@fault(
    "file",
    r"train-labels-idx1-ubyte\.gz' is a truncated or corrupted gzip archive.*re-download it",
    bad=("train-labels-idx1-ubyte.gz",),
)
def fashion_truncated_gz(c: Case) -> Trigger:
    """a Fashion-MNIST .gz cut in half"""
    folder = fashion_dir(c)
    path = folder / "train-labels-idx1-ubyte.gz"
    data = path.read_bytes()
    replace_link(path, data[: len(data) // 2])
    return lambda: c.cli("fit", *fashion_args(folder))


@fault("file", r"train-images-idx3-ubyte\.gz' is not an IDX file", bad=("train-images-idx3-ubyte.gz",))
def fashion_html_page(c: Case) -> Trigger:
    """an HTML error page saved as train-images-idx3-ubyte.gz"""
    folder = fashion_dir(c)
    replace_link(folder / "train-images-idx3-ubyte.gz", b"<html><body>404 Not Found</body></html>\n")
    return lambda: c.cli("fit", *fashion_args(folder))


@fault("file", r"a file, not a folder", bad=("a file, not a folder",))
def fashion_data_dir_is_a_file(c: Case) -> Trigger:
    """Fashion-MNIST data_dir naming one of the files instead of their folder"""
    folder = fashion_dir(c)
    no_other_fashion_folders(c)
    return lambda: c.cli("fit", *fashion_args(folder / "train-images-idx3-ubyte.gz"))


@fault(
    "file",
    r"data_dir 'mine' lacks t10k-labels-idx1-ubyte .*on the files in .*full instead; copy the missing file\(s\) "
    r"into 'mine', or unset data_dir",
    bad=("t10k-labels-idx1-ubyte",),
)
def fashion_incomplete_data_dir_falls_back(c: Case) -> Trigger:
    """Fashion-MNIST data_dir missing a file while $LIGHTNING_KD_FASHION_MNIST holds all four"""
    import lightning_kd.data.fashion_mnist as fm

    full = fashion_dir(c, "full")
    mine = fashion_dir(c, "mine")
    (mine / "t10k-labels-idx1-ubyte.gz").unlink()
    c.setenv(fm.ENV_VAR, str(full.resolve()))

    def trigger() -> Any:
        out = c.cli("fit", *fashion_args(mine))
        return c.said(out, r"(?i)fashion.*(instead|fall|lacks|using)")

    return trigger


@fault(
    "file",
    r"teacher_ckpt 'runs/digits/teacher/model\.ckpt' does not exist\. Train a teacher first",
    bad=("teacher_ckpt",),
)
def teacher_ckpt_missing(c: Case) -> Trigger:
    """the KD recipe run before its teacher was trained"""
    args = [a for a in recipe(c) if not a.startswith("--model.init_args.teacher_ckpt")]
    return lambda: c.cli("fit", *args)


@fault("file", r"teacher_ckpt 'teacher\.ckpt' is not a readable PyTorch checkpoint \(truncated", bad=("teacher.ckpt",))
def teacher_ckpt_truncated(c: Case) -> Trigger:
    """a teacher .ckpt cut short (an interrupted copy)"""
    args = recipe(c)
    data = Path("teacher.ckpt").read_bytes()
    Path("teacher.ckpt").write_bytes(data[: len(data) // 3])
    return lambda: c.cli("fit", *args)


@fault("file", r"teacher_ckpt 'teacher\.ckpt' is not a PyTorch checkpoint", bad=("teacher.ckpt",))
def teacher_ckpt_text_file(c: Case) -> Trigger:
    """a text file as teacher_ckpt"""
    args = recipe(c)
    Path("teacher.ckpt").write_text("epoch 40, val/acc 0.99\n")
    return lambda: c.cli("fit", *args)


@fault("file", r"teacher_ckpt 'runs/teacher' is a directory.*pass one of the checkpoint files", bad=("runs/teacher",))
def teacher_ckpt_directory(c: Case) -> Trigger:
    """a run's folder as teacher_ckpt"""
    healthy(c, "teacher")
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--model.init_args.teacher_ckpt=runs/teacher")


@fault(
    "file", r"teacher_ckpt 'teacher\.ckpt' does not match the teacher SmallCNN.*another shape", bad=("teacher.ckpt",)
)
def teacher_ckpt_other_architecture(c: Case) -> Trigger:
    """a teacher checkpoint of other widths"""
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--model.init_args.teacher.init_args.widths=[8,8,8]")


@fault(
    "file",
    r"teacher_ckpt 'nan_teacher\.pt' holds NaN or infinite weights in fc\.weight \(1 of \d+ tensors\).*re-export it",
    bad=("nan_teacher.pt", "teacher_ckpt", "teacher checkpoint"),
)
def teacher_ckpt_nan_weights(c: Case) -> Trigger:
    """a teacher state_dict holding NaN weights"""
    from lightning_kd import DistillationModule

    net = teacher_net()
    with torch.no_grad():
        net.fc.weight.fill_(float("nan"))
    torch.save(net.state_dict(), "nan_teacher.pt")

    def trigger() -> Any:
        module = DistillationModule(teacher_net(), student_net(), teacher_ckpt="nan_teacher.pt")
        trainer().fit(module, digits())

    return trigger


@fault(
    "file",
    r"File does not exist: '.*nope\.yaml'; check the path .*the recipes are in configs/<dataset>/",
    bad=("nope.yaml",),
)
def config_file_missing(c: Case) -> Trigger:
    """`--config nope.yaml`"""
    return lambda: c.cli("fit", "--config", "nope.yaml")


@fault(
    "file",
    r"broken\.yaml line 2, column 6: .*\(while parsing a flow mapping opened on line 1\); fix the YAML there",
    bad=("broken.yaml",),
)
def config_yaml_syntax_error(c: Case) -> Trigger:
    """a recipe fragment with a YAML syntax error"""
    Path("broken.yaml").write_text("trainer: {max_epochs: 1\nmodel: [\n")
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--config", "broken.yaml")


# -- checkpoints and resume -------------------------------------------------------------------------------------
@fault(
    "checkpoint/resume",
    r"--ckpt_path runs/teacher/model\.ckpt was written by lightning_kd\.ClassificationModule, but the config builds",
    bad=("ClassificationModule",),
)
def resume_from_another_module_class(c: Case) -> Trigger:
    """`fit --ckpt_path` a ClassificationModule checkpoint for a DistillationModule recipe"""
    healthy(c, "teacher")
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--ckpt_path=runs/teacher/model.ckpt")


@fault("checkpoint/resume", r"holds student = MLP\(.*hidden=\[16\].*hidden=\[32\]", bad=("student", "hidden"))
def resume_with_another_student(c: Case) -> Trigger:
    """`fit --ckpt_path` with a wider student than the checkpoint's"""
    published = healthy(c)
    args = recipe(c)
    return lambda: c.cli("fit", *args, f"--ckpt_path={published}", "--model.init_args.student.init_args.hidden=[32]")


@fault(
    "checkpoint/resume",
    r"resuming with temperature=2\.0; the checkpoint was trained with temperature=4\.0: to keep that, pass "
    r"--model\.init_args\.temperature=4\.0",
    bad=("temperature",),
    may_change=("runs/kd/model.ckpt*",),
)
def resume_with_another_temperature(c: Case) -> Trigger:
    """`fit --ckpt_path last.ckpt --model.init_args.temperature=2` (trained at 4)"""
    healthy(c)
    args = recipe(c)

    def trigger() -> Any:
        last = "--ckpt_path=runs/kd/version_0/checkpoints/last.ckpt"
        out = c.cli("fit", *args, last, "--trainer.max_epochs=2", "--model.init_args.temperature=2")
        return c.said(out, r"lightning-kd: resuming")

    return trigger


@fault(
    "checkpoint/resume",
    r"resuming restores the checkpoint's optimizer state .*lr=0\.003.*is not used; to train with it, start a new run",
    bad=("optimizer", "lr=0.1"),
    may_change=("runs/kd/model.ckpt*",),
)
def resume_with_another_learning_rate(c: Case) -> Trigger:
    """`fit --ckpt_path last.ckpt` with another learning rate"""
    healthy(c)
    args = recipe(c)

    def trigger() -> Any:
        last = "--ckpt_path=runs/kd/version_0/checkpoints/last.ckpt"
        out = c.cli("fit", *args, last, "--trainer.max_epochs=2", "--model.init_args.optimizer.init_args.lr=0.1")
        return c.said(out, r"lightning-kd: resuming")

    return trigger


@fault(
    "checkpoint/resume",
    r"--ckpt_path 'runs/kd/modle\.ckpt' does not exist\. Did you mean 'runs/kd/model\.ckpt'\? Pass one of the "
    r"checkpoint files in runs/kd: runs/kd/model\.ckpt, runs/kd/version_0/checkpoints/best\.ckpt",
    bad=("modle.ckpt",),
)
def resume_from_a_missing_file(c: Case) -> Trigger:
    """`--ckpt_path` with a typo in the file name"""
    healthy(c)
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--ckpt_path=runs/kd/modle.ckpt")


@fault(
    "checkpoint/resume",
    r"--ckpt_path 'cut\.ckpt' is not a readable PyTorch checkpoint \(truncated or corrupted.*resume from another "
    r"checkpoint",
    bad=("cut.ckpt",),
)
def resume_from_a_truncated_checkpoint(c: Case) -> Trigger:
    """`--ckpt_path` a checkpoint cut short"""
    published = healthy(c)
    data = published.read_bytes()
    Path("cut.ckpt").write_bytes(data[: len(data) // 2])
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--ckpt_path=cut.ckpt")


@fault(
    "checkpoint/resume",
    r"--ckpt_path 'notes\.ckpt' is not a PyTorch checkpoint \(torch\.save writes a zip archive.*point at the file",
    bad=("notes.ckpt",),
)
def resume_from_a_text_file(c: Case) -> Trigger:
    """`--ckpt_path` a text file"""
    Path("notes.ckpt").write_text("best epoch: 12\n")
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--ckpt_path=notes.ckpt")


@fault(
    "checkpoint/resume",
    r"--ckpt_path 'runs/kd' is a directory, not a checkpoint file; pass one of the checkpoint files in it: "
    r"runs/kd/model\.ckpt, runs/kd/version_0/checkpoints/best\.ckpt",
    bad=("runs/kd",),
)
def resume_from_a_directory(c: Case) -> Trigger:
    """`--ckpt_path` a run's folder"""
    healthy(c)
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--ckpt_path=runs/kd")


@fault(
    "checkpoint/resume",
    r"--ckpt_path 'weights\.pt' holds bare weights \(a state_dict\), not a Lightning checkpoint.*start a new run",
    bad=("weights.pt",),
)
def resume_from_a_state_dict(c: Case) -> Trigger:
    """`--ckpt_path` a plain state_dict (torch.save(model.state_dict()))"""
    torch.save(student_net().state_dict(), "weights.pt")
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--ckpt_path=weights.pt")


@fault(
    "checkpoint/resume",
    r"OneCycleLR schedule was sized for 2 steps.*keep the original max_epochs",
    bad=("OneCycleLR", "max_epochs"),
)
def resume_stretches_one_cycle(c: Case) -> Trigger:
    """resuming a OneCycleLR run with a larger max_epochs"""
    one_cycle = [
        "--model.init_args.lr_scheduler.class_path=torch.optim.lr_scheduler.OneCycleLR",
        "--model.init_args.lr_scheduler.init_args.max_lr=0.01",
    ]
    healthy(c, "kd", *one_cycle)
    args = [*recipe(c), *one_cycle]
    return lambda: c.cli("fit", *args, "--ckpt_path=runs/kd/version_0/checkpoints/last.ckpt", "--trainer.max_epochs=3")


@fault(
    "checkpoint/resume",
    r"checkpoint 'runs/kd/model\.ckpt' was written by DistillationModule .*cannot be loaded into "
    r"ClassificationModule: load it with DistillationModule\.load_from_checkpoint",
    bad=("DistillationModule",),
)
def load_checkpoint_into_another_class(c: Case) -> Trigger:
    """ClassificationModule.load_from_checkpoint of a DistillationModule checkpoint"""
    from lightning_kd import ClassificationModule

    published = healthy(c)
    return lambda: ClassificationModule.load_from_checkpoint(published)


@fault("checkpoint/resume", r"predict needs trained weights: pass --ckpt_path", bad=("--ckpt_path", "predict"))
def predict_without_a_checkpoint(c: Case) -> Trigger:
    """`lightning-kd predict` without --ckpt_path"""
    args = recipe(c)
    return lambda: c.cli("predict", *args)


@fault(
    "checkpoint/resume",
    r"validate needs trained weights: pass --ckpt_path .* scores would come from the freshly built student",
    bad=("--ckpt_path", "validate"),
)
def validate_without_a_checkpoint(c: Case) -> Trigger:
    """`lightning-kd validate` of a KD recipe without --ckpt_path (the student as freshly built)"""
    args = recipe(c)
    return lambda: c.cli("validate", *args)


@fault(
    "checkpoint/resume",
    r"test needs trained weights: pass --ckpt_path .* scores would come from the freshly built model",
    bad=("--ckpt_path", "test"),
)
def test_a_teacher_recipe_without_a_checkpoint(c: Case) -> Trigger:
    """`lightning-kd test` of the teacher recipe without --ckpt_path"""
    args = recipe(c, "teacher")
    return lambda: c.cli("test", *args)


@fault("checkpoint/resume", r"was written by lightning_kd\.ClassificationModule", bad=("ClassificationModule",))
def evaluate_with_another_module_class(c: Case) -> Trigger:
    """`lightning-kd test` of a ClassificationModule checkpoint with the KD recipe"""
    healthy(c, "teacher")
    args = recipe(c)
    return lambda: c.cli("test", *args, "--ckpt_path=runs/teacher/model.ckpt")


@fault(
    "own folders",
    r"would publish its model to runs/teacher/model\.ckpt, which is the teacher's checkpoint .* Give this run its own",
    bad=("model.ckpt", "teacher"),
)
def kd_run_in_its_teachers_folder(c: Case) -> Trigger:
    """`fit` of the KD recipe with `--trainer.default_root_dir` = its teacher's run folder"""
    published = healthy(c, "teacher")
    args = recipe(c, root="teacher")
    args = [a for a in args if not a.startswith("--model.init_args.teacher_ckpt=")]
    return lambda: c.cli("fit", *args, f"--model.init_args.teacher_ckpt={published}")


@fault(
    "own folders",
    r"runs/kd/model\.ckpt holds a model another recipe published \(a DistillationModule, this run is a "
    r"ClassificationModule\)",
    bad=("model.ckpt", "ClassificationModule"),
)
def student_recipe_into_the_kd_folder(c: Case) -> Trigger:
    """`fit` of the student-alone recipe into the KD run's folder, where the distilled student is published"""
    healthy(c, "kd")
    return lambda: c.cli("fit", *recipe(c, "student", root="kd"))
