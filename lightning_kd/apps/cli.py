"""``lightning-kd fit|validate|test|predict --config recipe.yaml [--config fragment.yaml]``: LightningCLI with
our defaults, plus lightning-kd's own tools dispatched before it (``lightning-kd cache|pipeline|quickstart``).

- any LightningModule / LightningDataModule by ``class_path`` (DistillationModule, ClassificationModule, …);
- no automatic optimizer: modules build theirs from trainable parameters only (a frozen teacher's
  parameters must never reach it), from ``optimizer``/``lr_scheduler`` init args;
- ``omegaconf+`` parser mode: ``${...}`` interpolation resolves after every ``--config`` and command-line
  argument is merged, so a base recipe can refer to what a method fragment sets (absolute key paths);
- the module's ``class_path`` config is stored in its hyper-parameters, so ``load_from_checkpoint(path)``
  rebuilds teacher and student with no arguments (LIGHTNING.md #9).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import yaml
from jsonargparse import Namespace, set_parsing_settings
from lightning.pytorch.cli import ArgsType, LightningCLI

from lightning_kd.callbacks.run_checkpoint import RunCheckpoint
from lightning_kd.core.teacher import TeacherBase

# `lightning-kd <tool> ...`: the tools that are not Trainer methods; imported only when asked for
TOOLS: dict[str, tuple[str, str]] = {
    "cache": ("lightning_kd.cache.build", "build an offline teacher cache for a recipe"),
    "pipeline": ("lightning_kd.apps.pipeline", "run a multi-stage pipeline (teacher -> assistant -> student, ...)"),
    "quickstart": ("lightning_kd.apps.quickstart", "the digits demo: teacher, student alone, student with KD"),
}


class KDCLI(LightningCLI):
    """LightningCLI that records the model's ``class_path`` config in its hyper-parameters, and takes the run's
    checkpointing under a top-level ``checkpoint:`` key (so a recipe fragment can set ``trainer.callbacks``
    without dropping it: lists in later configs replace earlier ones).

    lightning-kd modules save only plain hyper-parameters themselves (a model or optimizer factory pickled
    into a checkpoint breaks ``torch.load(weights_only=True)``); here, where the config is known, the
    module's whole config — ``class_path`` dicts for teacher, student, optimizer — replaces them, with the
    instantiator Lightning's ``load_from_checkpoint`` uses to rebuild the module from it.
    """

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")

    def before_instantiate_classes(self) -> None:
        """Recipes and CLI runs get :class:`KDProgressBar` (refreshed by time, no per-step cost) unless the config
        turns the bar off or names a progress bar of its own."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.get("trainer")
        if trainer is None or trainer.get("enable_progress_bar") is False:
            return
        callbacks = trainer.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        paths = [str(getattr(c, "class_path", "")) for c in callbacks]
        if any(p.endswith(("ProgressBar", "progress_bar.KDProgressBar")) for p in paths):
            return
        bar = Namespace(class_path="lightning_kd.callbacks.KDProgressBar", init_args=Namespace(refresh_seconds=0.5))
        trainer["callbacks"] = [*callbacks, bar]

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        self._record_model_config()
        expect_frozen_teachers(self.model)

    def _record_model_config(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_link_targets=False, skip_none=False))
        model = (dumped.get(self.subcommand, dumped) if self.subcommand else dumped).get("model") or {}
        if "class_path" not in model or config.get("model") is None:
            return
        hparams = {"_class_path": model["class_path"], **(model.get("init_args") or {})}
        hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
        self.model.save_hyperparameters(hparams)


def expect_frozen_teachers(model: L.LightningModule) -> None:
    """Lightning >= 2.5.5 warns about modules in eval mode at fit start (#21146); a frozen teacher always is.
    Silence exactly that count for this model (here, in the entry points: library code changes no warning
    filter), so any other module left in eval mode still warns."""
    teachers = [m for m in model.modules() if isinstance(m, TeacherBase)]
    frozen = len({id(sub) for m in teachers for sub in m.modules() if not sub.training})
    if frozen:
        warnings.filterwarnings("ignore", message=rf"Found {frozen} module\(s\) in eval mode at the start of training")


def build_cli(args: ArgsType = None, run: bool = True) -> LightningCLI:
    """Parse ``args`` (``None``: ``sys.argv``), build model/data/trainer and, if ``run``, run the subcommand."""
    # `${trainer.default_root_dir}` in a recipe means the key of the config being parsed, whatever the
    # subcommand (fit/validate/test/predict) it sits under
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    return KDCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        parser_kwargs={"parser_mode": "omegaconf+"},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def _tool(name: str) -> Callable[[Sequence[str]], object]:
    import importlib

    return importlib.import_module(TOOLS[name][0]).main


def main(args: ArgsType = None) -> None:
    """Entry point of the ``lightning-kd`` console script."""
    argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else None
    if argv and argv[0] in TOOLS:
        _tool(argv[0])(argv[1:])
        return
    if argv and argv[0] in ("-h", "--help"):
        print("lightning-kd tools (not Trainer methods):")
        for name, (_, what) in TOOLS.items():
            print(f"  lightning-kd {name:<11} {what}")
        print()
    build_cli(args)


if __name__ == "__main__":  # pragma: no cover
    main()
