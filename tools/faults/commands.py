"""Faults at the command line: pipelines and the arguments of ``lightning-kd``."""

from __future__ import annotations

from tools.faults.harness import Case, fault
from tools.faults.setups import (
    DIGITS,
    STUDENT_STAGE,
    Trigger,
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
