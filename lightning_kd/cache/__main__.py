"""``python -m lightning_kd.cache --config recipe.yaml …`` is ``lightning-kd cache --config recipe.yaml …``."""

from lightning_kd.cache.build import main

main()
