"""The offline teacher: logits stored once per (epoch, sample), read back by a :class:`CachedTeacher`.

- :mod:`~lightning_kd.cache.store`: the on-disk format (:class:`TeacherCache`, fp16/fp32/top-k, memory-mapped);
- :mod:`~lightning_kd.cache.topk`: the top-k codec (``k`` logits and one fill logit per sample);
- :mod:`~lightning_kd.cache.build`: running the teacher over every training view (``lightning-kd cache``);
- :mod:`~lightning_kd.cache.lm_store`, :mod:`~lightning_kd.cache.lm_teacher`: the causal-LM teacher's top-k
  log-probabilities per token (``lightning-kd cache-lm``) and :class:`CachedLMTeacher`;
- :mod:`~lightning_kd.cache.teacher`: :class:`CachedTeacher`, the teacher component that reads it.
"""

from lightning_kd.cache.build import build_from_recipe, build_teacher_cache, check_replayable, datamodule_key
from lightning_kd.cache.lm_store import LMTeacherStore, decode_lm_topk, topk_logprobs
from lightning_kd.cache.lm_teacher import CachedLMTeacher, build_lm_store
from lightning_kd.cache.store import TeacherCache, dataset_fingerprint, teacher_fingerprint
from lightning_kd.cache.teacher import CachedTeacher, CachedTeacherDistillation
from lightning_kd.cache.topk import decode_topk, encode_topk

__all__ = [
    "CachedLMTeacher",
    "LMTeacherStore",
    "build_lm_store",
    "decode_lm_topk",
    "topk_logprobs",
    "CachedTeacher",
    "CachedTeacherDistillation",
    "TeacherCache",
    "build_from_recipe",
    "build_teacher_cache",
    "check_replayable",
    "datamodule_key",
    "dataset_fingerprint",
    "decode_topk",
    "encode_topk",
    "teacher_fingerprint",
]
