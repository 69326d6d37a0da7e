"""``lightning-kd fit|validate|test|predict --config recipe.yaml``: LightningCLI with our defaults.

- any LightningModule / LightningDataModule by ``class_path`` (DistillationModule, ClassificationModule, …);
- no automatic optimizer: modules build theirs from trainable parameters only (a frozen teacher's
  parameters must never reach it), from ``optimizer``/``lr_scheduler`` init args;
- omegaconf parser mode, so recipes may use ``${...}`` interpolation.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import ArgsType, LightningCLI


def build_cli(args: ArgsType = None, run: bool = True) -> LightningCLI:
    """Parse ``args`` (``None``: ``sys.argv``), build model/data/trainer and, if ``run``, run the subcommand."""
    return LightningCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(args: ArgsType = None) -> None:
    """Entry point of the ``lightning-kd`` console script."""
    build_cli(args)


if __name__ == "__main__":  # pragma: no cover
    main()
