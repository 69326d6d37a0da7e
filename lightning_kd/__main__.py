"""``python -m lightning_kd fit --config …`` is the same as ``lightning-kd fit --config …``."""

from lightning_kd.apps.cli import main

main()
