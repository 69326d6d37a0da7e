"""The offline teacher: outputs stored once, read back by a teacher component instead of running the model.

- :mod:`~lightning_kd.cache.store`: the classifier cache's on-disk format (:class:`TeacherCache`, fp16/fp32/top-k,
  memory-mapped), keyed by :mod:`~lightning_kd.cache.keys`; :mod:`~lightning_kd.cache.topk` its top-k codec;
- :mod:`~lightning_kd.cache.build`: running the teacher over every training view (:func:`build_teacher_cache`);
- :mod:`~lightning_kd.cache.teacher`: :class:`CachedTeacher`, the teacher component that reads it;
- :mod:`~lightning_kd.cache.lm_store`, :mod:`~lightning_kd.cache.lm_build`, :mod:`~lightning_kd.cache.lm_teacher`:
  the causal-LM teacher's top-k log-probabilities per token, built by :func:`build_lm_store`, read by
  :class:`CachedLMTeacher`.

The recipe-driven commands (``lightning-kd cache``, ``lightning-kd cache-lm``) live in :mod:`lightning_kd.apps`.
"""

from types import ModuleType as _ModuleType

from lightning_kd.cache.build import build_teacher_cache
from lightning_kd.cache.keys import check_replayable, datamodule_key
from lightning_kd.cache.lm_build import build_lm_store
from lightning_kd.cache.lm_store import LMTeacherStore, topk_logprobs
from lightning_kd.cache.lm_teacher import CachedLMTeacher
from lightning_kd.cache.store import TeacherCache
from lightning_kd.cache.teacher import CachedTeacher
from lightning_kd.cache.topk import decode_topk, encode_topk
from lightning_kd.data.fingerprint import dataset_fingerprint

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))
