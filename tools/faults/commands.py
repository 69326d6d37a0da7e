"""Faults at the command line: pipelines and the arguments of ``lightning-kd``."""

from __future__ import annotations

from tools.faults.harness import Case, fault
from tools.faults.setups import (
    DIGITS,
    STUDENT_STAGE,
    Trigger,
    healthy,
    pipeline_file,
    recipe,
)


# -- pipelines --------------------------------------------------------------------------------------------------
@fault(
    "pipeline",
    r"stage 'gen0': args must be a list of strings",
    bad=("args",),
)
def pipeline_args_as_a_string(c: Case) -> Trigger:
    """a pipeline stage's `args:` given as one string"""
    spec = pipeline_file([{**STUDENT_STAGE, "args": "--trainer.max_epochs=1"}])
    return lambda: c.cli("pipeline", spec)


@fault(
    "pipeline",
    r"pipeline file 'nope\.yaml' does not exist; pass one of the pipelines",
    bad=("nope.yaml",),
)
def pipeline_file_missing(c: Case) -> Trigger:
    """`lightning-kd pipeline nope.yaml`"""
    return lambda: c.cli("pipeline", "nope.yaml")


@fault(
    "pipeline",
    r"stage 'teacher' of 'pipeline\.yaml': its recipe file 'nope/base\.yaml' does not exist; check the stage's",
    bad=("nope/base.yaml",),
)
def pipeline_stage_recipe_missing(c: Case) -> Trigger:
    """a pipeline stage naming a recipe file that does not exist"""
    spec = pipeline_file([{"name": "teacher", "config": ["nope/base.yaml"]}])
    return lambda: c.cli("pipeline", spec)


@fault(
    "pipeline",
    r"its logger writes to .*elsewhere.*outside the pipeline's folder.*give the recipe's logger save_dir",
    bad=("elsewhere", "save_dir"),
)
def pipeline_logger_outside_its_folder(c: Case) -> Trigger:
    """a pipeline stage whose logger writes outside the pipeline's folder"""
    spec = pipeline_file(
        [{**STUDENT_STAGE, "args": [*STUDENT_STAGE["args"], "--trainer.logger.init_args.save_dir=elsewhere"]}]
    )
    return lambda: c.cli("pipeline", spec)


@fault(
    "pipeline",
    r"the pipeline has no stages; list at least one",
    bad=("stages",),
)
def pipeline_without_stages(c: Case) -> Trigger:
    """a pipeline file with `stages: []`"""
    spec = pipeline_file([])
    return lambda: c.cli("pipeline", spec)


# -- command line -----------------------------------------------------------------------------------------------
@fault(
    "CLI",
    r"unrecognized argument: --trainer\.max_epochz=2; did you mean --trainer\.max_epochs\?",
    bad=("max_epochz",),
)
def misspelt_trainer_flag(c: Case) -> Trigger:
    """`--trainer.max_epochz=2`"""
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--trainer.max_epochz=2")


@fault("CLI", r"DistillationModule has no argument 'temperatur'; did you mean 'temperature'\?", bad=("temperatur",))
def misspelt_model_argument(c: Case) -> Trigger:
    """`--model.init_args.temperatur=2`"""
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--model.init_args.temperatur=2")


@fault(
    "CLI",
    r"trainer\.max_epochs: expected a whole number \(int\), got 'abc'; give a whole number, e\.g\. "
    r"--trainer\.max_epochs=10",
    bad=("max_epochs", "abc"),
)
def wrong_type_for_a_flag(c: Case) -> Trigger:
    """`--trainer.max_epochs=abc`"""
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--trainer.max_epochs=abc")


@fault(
    "CLI",
    r"class_path 'lightning_kd\.models\.MLq' does not exist .*did you mean 'lightning_kd\.models\.MLP'\?",
    bad=("MLq",),
)
def misspelt_class_path(c: Case) -> Trigger:
    """`--model.init_args.student.class_path=lightning_kd.models.MLq`"""
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--model.init_args.student.class_path=lightning_kd.models.MLq")


@fault("CLI", r"invalid choice: 'fitt' \(choose from", bad=("fitt",))
def misspelt_subcommand(c: Case) -> Trigger:
    """`lightning-kd fitt`"""
    return lambda: c.cli("fitt", "--config", str(DIGITS / "base.yaml"))


@fault(
    "CLI",
    r"expected \"subcommand\" to be one of \{fit,validate,test,predict\}, but it was not provided\. Start the command "
    r"with one of them, e\.g\. `lightning-kd fit --config ",
    bad=("subcommand",),
)
def no_subcommand(c: Case) -> Trigger:
    """`lightning-kd --config recipe.yaml` without fit/test/..."""
    return lambda: c.cli("--config", str(DIGITS / "base.yaml"))


@fault(
    "CLI",
    r"the following arguments are required: --config .*give it as for `lightning-kd fit`, e\.g\. lightning-kd cache",
    bad=("--config",),
)
def cache_tool_without_a_recipe(c: Case) -> Trigger:
    """`lightning-kd cache` without --config"""
    return lambda: c.cli("cache")


@fault(
    "CLI",
    r"Ctrl-C of `lightning-kd seeds` mid-study: exit 130, no traceback: lightning-kd: interrupted \(Ctrl-C\)",
    kind="guard",
    slow=True,
)
def ctrl_c_of_a_tool(c: Case) -> Trigger:
    """Ctrl-C of `lightning-kd seeds` while a seed trains (a 31-line traceback before)"""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    args = recipe(c)
    configs = ",".join(a for prev, a in zip(args, args[1:]) if prev == "--config")
    extra = [a for a in args if a.startswith("--") and a != "--config" and not a.endswith(".yaml")]
    extra = [a for a in extra if not a.startswith(("--trainer.max_epochs", "--trainer.default_root_dir"))]
    extra += ["--trainer.max_epochs=400"]  # long enough to be stopped in its first seed

    def trigger() -> str:
        cmd = [sys.executable, "-m", "lightning_kd", "seeds", "--recipe", f"kd={configs}", "--seeds", "0", "1",
               "--out", "study", *extra]  # fmt: skip
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            # a terminal's Ctrl-C reaches a process whose SIGINT is at its default; one inherited as "ignored" (a
            # parent that handled a Ctrl-C before) would never see it
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        deadline = time.monotonic() + 120
        try:
            while not any(Path("study").glob("**/last.ckpt")):
                c.check(proc.poll() is None, f"the study ended (exit {proc.returncode}) before it could be stopped")
                c.check(time.monotonic() < deadline, "the first seed wrote no checkpoint in 120 s")
                time.sleep(0.01)
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        lines = [ln for ln in out.splitlines() if ln.strip() and "lightning-kd: interrupted" in ln]
        c.check(proc.returncode == 130, f"exit {proc.returncode}, not 130: {out[-400:]!r}")
        c.check("Traceback" not in out, f"a traceback was printed: {out[-400:]!r}")
        c.check(bool(lines), f"nothing said the study was interrupted: {out[-400:]!r}")
        return f"Ctrl-C of `lightning-kd seeds` mid-study: exit 130, no traceback: {lines[-1].strip()}"

    return trigger


# -- configs and what the CLI says ------------------------------------------------------------------------------
@fault(
    "CLI",
    r"a printed config fitted with --trainer\.default_root_dir=elsewhere wrote its run there \(\d+ files\) and "
    r"nothing into runs/kd",
    kind="guard",
)
def print_config_refit_elsewhere(c: Case) -> Trigger:
    """`fit --print_config > p.yaml`, then `fit --config p.yaml --trainer.default_root_dir elsewhere` (it wrote into
    the printed run's folder: interpolations frozen at print time)"""
    from pathlib import Path

    args = recipe(c)
    printed = c.cli("fit", *args, "--print_config")
    Path("printed.yaml").write_text(printed[printed.index("# lightning.pytorch==") :])  # the YAML, not the log
    teacher = next(a for a in args if a.startswith("--model.init_args.teacher_ckpt="))

    def trigger() -> str:
        c.cli("fit", "--config=printed.yaml", "--trainer.default_root_dir=elsewhere", teacher)
        written = [p for p in Path("elsewhere").rglob("*") if p.is_file()]
        c.check(Path("elsewhere/model.ckpt").is_file(), "the refit published no model in elsewhere/")
        c.check(not Path("runs/kd").exists(), f"the refit wrote into runs/kd: {sorted(Path('runs/kd').rglob('*'))}")
        return (
            "a printed config fitted with --trainer.default_root_dir=elsewhere wrote its run there "
            f"({len(written)} files) and nothing into runs/kd"
        )

    return trigger


@fault(
    "file",
    r"two\.yaml:4: the key 'trainer' is given twice in one block \(first at line 1\).*Give it once",
    bad=("trainer", "two.yaml"),
)
def yaml_key_given_twice(c: Case) -> Trigger:
    """a recipe fragment with two `trainer:` blocks (YAML kept the second silently)"""
    from pathlib import Path

    Path("two.yaml").write_text("trainer:\n  max_epochs: 2\nmodel: {init_args: {alpha: 0.5}}\ntrainer:\n  x: 1\n")
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--config=two.yaml")


@fault(
    "file",
    r"could not write .*: no space left on the disk of .* MB free\)\. Free space there or point "
    r"trainer\.default_root_dir",
    bad=("no space left",),
)
def disk_full_while_saving(c: Case) -> Trigger:
    """the disk fills up while a checkpoint is written (shown as `[Errno 18] Invalid cross-device link` before)"""
    import errno

    from lightning.pytorch.plugins.io import TorchCheckpointIO

    def full(self, checkpoint, path, storage_options=None):
        try:  # as fsspec fails: its temporary file cannot be renamed across disks, the copy then runs out of space
            raise OSError(errno.EXDEV, "Invalid cross-device link", "/tmp/tmpk3x9", None, str(path))
        except OSError:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))  # noqa: B904 - as shutil does

    args = recipe(c)
    c.setattr(TorchCheckpointIO, "save_checkpoint", full)
    return lambda: c.cli("fit", *args)


@fault(
    "file",
    r"--ckpt_path 'old\.ckpt': not loaded: the file holds Python objects \(argparse\.Namespace\), which could run "
    r"code when loaded\. If you trust it, add --weights_only false\.$",
    bad=("old.ckpt", "Python objects"),
)
def pickled_checkpoint_to_evaluate(c: Case) -> Trigger:
    """`validate --ckpt_path` of a checkpoint holding pickled objects (a 1,700-character dump before)"""
    import argparse

    import torch

    published = healthy(c)
    ckpt = torch.load(published, weights_only=True)
    ckpt["hyper_parameters"] = argparse.Namespace(lr=0.1)
    torch.save(ckpt, "old.ckpt")
    args = recipe(c)
    return lambda: c.cli("validate", *args, "--ckpt_path=old.ckpt")


@fault(
    "CLI",
    r"--ckpt 'narrow\.pt' does not match the recipe's student MLP: .*another shape.*Check that the recipe's student's",
    bad=("student", "narrow.pt"),
)
def report_student_of_other_widths(c: Case) -> Trigger:
    """`lightning-kd report --ckpt` of a student with other widths than the recipe's (blamed on the teacher before)"""
    import torch

    from lightning_kd.models import MLP, SmallCNN

    torch.save(MLP(64, 10, hidden=(8,)).state_dict(), "narrow.pt")
    torch.save(SmallCNN(1, 10, widths=(32, 64, 128)).state_dict(), "teacher.pt")  # the recipe's teacher: it fits
    configs = ["--config", str(DIGITS / "base.yaml"), "--config", str(DIGITS / "kd.yaml")]
    files = ["--ckpt=narrow.pt", "--teacher-ckpt=teacher.pt", "--no-export", "--no-plots"]
    return lambda: c.cli("report", *configs, *files)
