"""0.1.0's ``python -m lightning_kd.cache_build``: kept one release so existing scripts keep working.

The builder lives in :mod:`lightning_kd.cache.build`; the command is now ``lightning-kd cache``. This is the
one flat module left at the package's top level besides ``__init__``/``__main__``: ``python -m`` needs a
module of exactly this name.
"""

from lightning_kd.cache.build import build_from_recipe, build_teacher_cache, main

__all__ = ["build_from_recipe", "build_teacher_cache", "main"]

if __name__ == "__main__":  # pragma: no cover
    main()
