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
    gap="the message is right, but `lightning-kd pipeline` prints it under a full Python traceback",
)
def pipeline_args_as_a_string(c: Case) -> Trigger:
    """a pipeline stage's `args:` given as one string"""
    spec = pipeline_file([{**STUDENT_STAGE, "args": "--trainer.max_epochs=1"}])
    return lambda: c.cli("pipeline", spec)


@fault(
    "pipeline",
    r"No such file or directory: 'nope\.yaml'",
    bad=("nope.yaml",),
    gap="a missing pipeline file ends in a bare FileNotFoundError traceback; it should say 'pipeline file nope.yaml "
    "does not exist; the pipelines are in configs/pipelines/'",
)
def pipeline_file_missing(c: Case) -> Trigger:
    """`lightning-kd pipeline nope.yaml`"""
    return lambda: c.cli("pipeline", "nope.yaml")


@fault(
    "pipeline",
    r"File does not exist: .*nope/base\.yaml",
    bad=("nope/base.yaml",),
    gap="a stage's missing recipe file raises the parser's 'File does not exist' under a traceback, naming neither "
    "the stage nor a remedy",
)
def pipeline_stage_recipe_missing(c: Case) -> Trigger:
    """a pipeline stage naming a recipe file that does not exist"""
    spec = pipeline_file([{"name": "teacher", "config": ["nope/base.yaml"]}])
    return lambda: c.cli("pipeline", spec)


@fault(
    "pipeline",
    r"its logger writes to .*elsewhere.*outside the pipeline's folder.*give the recipe's logger save_dir",
    bad=("elsewhere", "save_dir"),
    gap="the message is right, but `lightning-kd pipeline` prints it under a full Python traceback",
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
    gap="the message is right, but `lightning-kd pipeline` prints it under a full Python traceback",
)
def pipeline_without_stages(c: Case) -> Trigger:
    """a pipeline file with `stages: []`"""
    spec = pipeline_file([])
    return lambda: c.cli("pipeline", spec)


# -- command line -----------------------------------------------------------------------------------------------
@fault(
    "CLI",
    r"unrecognized arguments: --trainer\.max_epochz=2",
    bad=("max_epochz",),
    gap="a misspelt Trainer flag gets no suggestion (a misspelt model argument gets 'did you mean'); it should say "
    "'did you mean --trainer.max_epochs?'",
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
    r"trainer\.max_epochs: Expected a <class 'int'>, got 'abc'",
    bad=("max_epochs", "abc"),
    gap="names the option and the value but no remedy ('give a whole number, e.g. --trainer.max_epochs=40')",
)
def wrong_type_for_a_flag(c: Case) -> Trigger:
    """`--trainer.max_epochs=abc`"""
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--trainer.max_epochs=abc")


@fault(
    "CLI",
    r"class_path",
    bad=("MLq",),
    gap="a misspelt class_path gives 'Problem with given class_path ...DistillationModule:, got NestedArg(...)': "
    "it should say 'lightning_kd.models.MLq does not exist; did you mean lightning_kd.models.MLP?'",
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
    r"expected \"subcommand\" to be one of \{fit,validate,test,predict\}, but it was not provided",
    bad=("subcommand",),
    gap="states what is missing but no remedy ('start with a subcommand: lightning-kd fit --config ...')",
)
def no_subcommand(c: Case) -> Trigger:
    """`lightning-kd --config recipe.yaml` without fit/test/..."""
    return lambda: c.cli("--config", str(DIGITS / "base.yaml"))


@fault(
    "CLI",
    r"the following arguments are required: --config",
    bad=("--config",),
    gap="argparse's own usage error: names --config but no remedy or example",
)
def cache_tool_without_a_recipe(c: Case) -> Trigger:
    """`lightning-kd cache` without --config"""
    return lambda: c.cli("cache")
