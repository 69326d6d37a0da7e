"""``lightning-kd fit|validate|test|predict --config recipe.yaml [--config fragment.yaml]``: LightningCLI with
our defaults, plus lightning-kd's own tools dispatched before it (``lightning-kd cache|pipeline|quickstart``).

- any LightningModule / LightningDataModule by ``class_path`` (DistillationModule, ClassificationModule, …);
- no automatic optimizer: modules build theirs from trainable parameters only (a frozen teacher's
  parameters must never reach it), from ``optimizer``/``lr_scheduler`` init args;
- ``omegaconf+`` parser mode: ``${...}`` interpolation resolves after every ``--config`` and command-line
  argument is merged, so a base recipe can refer to what a method fragment sets (absolute key paths);
- the module's ``class_path`` config is stored in its hyper-parameters, so ``load_from_checkpoint(path)``
  rebuilds teacher and student with no arguments (Lightning PR #18105);
- ``--ckpt_path`` never silently replaces the config: the config wins, each difference from the checkpoint is
  said, and a checkpoint of another module class or other models is refused;
- ``test``/``validate``/``predict`` on a checkpoint log beside it (``<its folder>/<subcommand>/``) and ``predict``
  writes its predictions there; ``predict`` without a checkpoint is refused;
- a failure prints the library's message in a few lines (``LIGHTNING_KD_DEBUG=1`` for the traceback); third-party
  noise of a clean run is filtered here, narrowly, and nowhere in the library.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from jsonargparse import Namespace, set_parsing_settings
from lightning.pytorch.cli import ArgsType, LightningCLI

from lightning_kd.apps.cli_errors import DEBUG_ENV, short_message
from lightning_kd.apps.config_files import KDArgumentParser, config_files, refuse_duplicate_keys
from lightning_kd.apps.interrupts import short_interrupts
from lightning_kd.apps.quiet import expect_frozen_teachers, quiet_third_party_noise
from lightning_kd.apps.untrained import untrained_networks
from lightning_kd.callbacks.run_checkpoint import RunCheckpoint
from lightning_kd.core.weights import read_run_checkpoint

# `lightning-kd <tool> ...`: the tools that are not Trainer methods; imported only when asked for
TOOLS: dict[str, tuple[str, str]] = {
    "cache": ("lightning_kd.apps.cache", "build an offline teacher cache for a recipe"),
    "cache-lm": ("lightning_kd.apps.cache_lm", "store a causal-LM teacher's top-k log-probabilities per token"),
    "pipeline": ("lightning_kd.apps.pipeline", "run a multi-stage pipeline (teacher -> assistant -> student, ...)"),
    "quickstart": ("lightning_kd.apps.quickstart", "the digits demo: teacher, student alone, student with KD"),
    "quickstart-lm": ("lightning_kd.apps.lm_quickstart", "the LM demo: teacher, student alone, student with KD"),
    "seeds": ("lightning_kd.apps.seeds", "run recipes over seeds: mean ± std, paired differences, one table"),
    "report": ("lightning_kd.apps.report", "teacher vs student report and the student exported (ONNX, pt2)"),
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
        parser.add_argument(
            "--allow_untrained",
            type=bool,
            default=False,
            help="validate/test/predict without --ckpt_path even when the trained networks are freshly built",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand in ("validate", "test", "predict"):
            self._evaluate_beside_the_checkpoint(config)
        self._default_progress_bar(config)

    def _default_progress_bar(self, config: Namespace) -> None:
        """Recipes and CLI runs get :class:`KDProgressBar` (refreshed by time, no per-step cost) unless the config
        turns the bar off or names a progress bar of its own."""
        trainer = config.get("trainer")
        if trainer is None or trainer.get("enable_progress_bar") is False:
            return
        callbacks = _as_list(trainer.get("callbacks"))
        paths = [str(getattr(c, "class_path", "")) for c in callbacks]
        if any(p.endswith(("ProgressBar", "progress_bar.KDProgressBar")) for p in paths):
            return
        bar = Namespace(class_path="lightning_kd.callbacks.KDProgressBar", init_args=Namespace(refresh_seconds=0.5))
        trainer["callbacks"] = [*callbacks, bar]

    def _evaluate_beside_the_checkpoint(self, config: Namespace) -> None:
        """validate/test/predict on ``--ckpt_path X`` write their logs (and predictions) under ``X``'s folder, in
        ``<subcommand>/version_<n>``, never into the training run's files; ``predict`` needs trained weights."""
        ckpt = config.get("ckpt_path")
        if not ckpt:
            untrained = untrained_networks(config.get("model"))
            if untrained and not config.get("allow_untrained"):
                what = {"predict": "predictions", "validate": "scores", "test": "scores"}[self.subcommand]
                raise ValueError(
                    f"{self.subcommand} needs trained weights: pass --ckpt_path (e.g. runs/digits/kd/model.ckpt, the "
                    f"model a fit published); without it the {what} would come from the freshly built "
                    f"{' and '.join(untrained)}. To score them as built on purpose, add --allow_untrained true."
                )
            return
        folder = str(Path(ckpt).resolve().parent / self.subcommand)
        trainer = config.get("trainer")
        if trainer is None:
            return
        trainer["default_root_dir"] = folder
        logger = trainer.get("logger")
        for entry in _as_list(logger):
            init = getattr(entry, "init_args", None)
            if init is not None and "save_dir" in init:
                init["save_dir"] = folder
        if self.subcommand == "predict":
            writer = Namespace(
                class_path="lightning_kd.callbacks.PredictionWriter", init_args=Namespace(output_dir=folder)
            )
            trainer["callbacks"] = [*_as_list(trainer.get("callbacks")), writer]

    def _parse_ckpt_path(self) -> None:
        """Overrides LightningCLI's, which replaces the model config with the checkpoint's hyper-parameters: a value
        given on the command line would be silently lost, and a checkpoint of another module class would silently
        change what is trained. Here the config wins; each plain value it changes is said; a checkpoint of another
        module class or other models is refused, naming both."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path or str(ckpt_path) in _LIGHTNING_CKPT_NAMES or "://" in str(ckpt_path):
            return
        # a folder, a typo, a text file, a cut-off copy: named with the checkpoints beside it, before Lightning
        ckpt = read_run_checkpoint(ckpt_path, "--ckpt_path", trust=config.get("weights_only") is False)
        if ckpt is None or config.get("model") is None:  # pickled objects: Lightning's trusted load decides
            return
        saved = dict(ckpt.get("hyper_parameters") or {})
        saved_class = saved.pop("_class_path", None) or ckpt.get("lightning_kd_module")
        model = config["model"]
        if saved_class and not _same_class(saved_class, model.get("class_path")):
            raise ValueError(
                f"--ckpt_path {ckpt_path} was written by {saved_class}, but the config builds "
                f"{model.get('class_path')}: pass the recipe it was trained with, or start a new run from its weights "
                "(as teacher_ckpt, or lightning_kd.core.weights.load_weights)."
            )
        init = model.get("init_args") or Namespace()
        for key, old in saved.items():
            if key.startswith("_") or key not in init:
                continue
            new = _canonical(init[key])
            old = _canonical(old)
            if new == old:
                continue
            if key in _NETWORK_ARGS:
                raise ValueError(
                    f"--ckpt_path {ckpt_path} holds {key} = {_short(old)}, but the config builds {key} = "
                    f"{_short(new)}: its weights would not fit. Pass the recipe it was trained with."
                )
            # other differences are said by the module when it loads the checkpoint (resumed_differences)

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


# --ckpt_path values that Lightning resolves itself (the run's last or best checkpoint, ...)
_LIGHTNING_CKPT_NAMES = {"last", "best", "hpc", "registry"}
# constructor arguments that are networks: a checkpoint's weights only fit the same ones
_NETWORK_ARGS = {"teacher", "student", "teachers", "students", "model", "discriminator"}


def _canonical(value: Any) -> Any:
    """A config value as plain JSON data (tuples as lists, namespaces as dicts), for comparing."""
    value = value.as_dict() if isinstance(value, Namespace) else value
    return json.loads(json.dumps(value, default=str))


def _short(value: Any) -> str:
    """A config value in one short line: a class_path dict as ``Class(arg=…)`` with only its non-default-looking
    arguments, other values as their repr."""
    if isinstance(value, dict) and "class_path" in value:
        args = ", ".join(f"{k}={v!r}" for k, v in (value.get("init_args") or {}).items())
        text = f"{value['class_path'].rsplit('.', 1)[-1]}({args})"
        return text if len(text) <= 160 else text[:157] + "..."
    return repr(value)


def _as_list(value: Any) -> list[Any]:
    return [] if value is None or value is False or value is True else value if isinstance(value, list) else [value]


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _same_class(a: str, b: str | None) -> bool:
    """Whether two import paths name the same class (``lightning_kd.DistillationModule`` is an alias)."""
    if b is None or a == b:
        return True
    import importlib

    def resolve(path: str) -> Any:
        module, _, name = path.rpartition(".")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            return path

    return resolve(a) is resolve(b)


def build_cli(args: ArgsType = None, run: bool = True) -> LightningCLI:
    """Parse ``args`` (``None``: ``sys.argv``), build model/data/trainer and, if ``run``, run the subcommand."""
    # `${trainer.default_root_dir}` in a recipe means the key of the config being parsed, whatever the
    # subcommand (fit/validate/test/predict) it sits under
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    argv = sys.argv[1:] if args is None else args if isinstance(args, (list, tuple)) else []
    for file in config_files([str(a) for a in argv]):
        refuse_duplicate_keys(file)
    return KDCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        parser_class=KDArgumentParser,  # --print_config and config.yaml keep ${trainer.default_root_dir}
        # errors raise instead of printing the 70-line usage: main() prints them short
        parser_kwargs={"parser_mode": "omegaconf+", "exit_on_error": False},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def _tool(name: str) -> Callable[[Sequence[str]], object]:
    import importlib

    return importlib.import_module(TOOLS[name][0]).main


def _short_errors(run: Callable[[], object], argv: Sequence[str] | None) -> None:
    """Run ``run``; a failure prints the library's message in a line or two and exits 1 (``LIGHTNING_KD_DEBUG=1``:
    the traceback instead); Ctrl-C prints two lines and exits 130 (a fit says where it saved its state first)."""
    try:
        short_interrupts(run)()
    except Exception as err:  # noqa: BLE001 - every failure gets the short form; the traceback on request
        if os.environ.get(DEBUG_ENV):
            raise
        message = short_message(err, argv)
        print(f"lightning-kd: error: {message}\n(set {DEBUG_ENV}=1 for the full traceback)", file=sys.stderr)
        raise SystemExit(1) from None


def main(args: ArgsType = None) -> None:
    """Entry point of the ``lightning-kd`` console script."""
    argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else None
    if argv and argv[0] in TOOLS:
        _short_errors(lambda: _tool(argv[0])(argv[1:]), argv[1:])
        return
    if argv and argv[0] in ("-h", "--help"):
        print("lightning-kd tools (not Trainer methods):")
        for name, (_, what) in TOOLS.items():
            print(f"  lightning-kd {name:<11} {what}")
        print()
    quiet_third_party_noise()
    _short_errors(lambda: build_cli(args), argv)


if __name__ == "__main__":  # pragma: no cover
    main()
