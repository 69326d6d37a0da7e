"""lightning-kd: knowledge distillation for PyTorch Lightning.

The names below are re-exported lazily (PEP 562): ``import lightning_kd.losses`` or ``lightning_kd.models``
loads only torch, and Lightning is imported the first time a LightningModule (``DistillationModule``, …)
is asked for.

Layout (each layer imports only the ones below it)::

    apps/       entry points: CLI, pipeline, quickstart, cache builder
    modules/    LightningModules: distillation, classification, multi-teacher, mutual, adversarial, causal LMs
    callbacks/  schedules, feature hooks          data/  LightningDataModules
    cache/      offline teacher: store, builder, CachedTeacher
    core/       pure torch: Teacher, Batch, FeatureTerm(s), connectors, captures, schedules, weights
    losses/     pure torch: logit, feature, relation, contrastive, ensemble/mutual/adversarial maths
    models/     pure torch: the model zoo
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.3.0.dev0"

# public name -> module that defines it
_EXPORTS = {
    "AdversarialDistillation": "lightning_kd.modules.adversarial",
    "CachedLMTeacher": "lightning_kd.cache.lm_teacher",
    "CachedTeacher": "lightning_kd.cache.teacher",
    "CausalLMDistillation": "lightning_kd.modules.causal_lm",
    "CausalLMModule": "lightning_kd.modules.causal_lm",
    "CausalLMTeacher": "lightning_kd.core.lm",
    "ClassificationModule": "lightning_kd.modules.classification",
    "CrossTokenizerDistillation": "lightning_kd.modules.cross_tokenizer",
    "DataFreeDistillation": "lightning_kd.modules.data_free",
    "DeiTDistillation": "lightning_kd.modules.deit",
    "DistillationModule": "lightning_kd.modules.distillation",
    "FeatureTerm": "lightning_kd.core.feature_term",
    "FeatureTerms": "lightning_kd.core.feature_terms",
    "KDLoss": "lightning_kd.losses.logit.kd",
    "MultiTeacherDistillation": "lightning_kd.modules.multi_teacher",
    "MutualLearning": "lightning_kd.modules.mutual",
    "Synthesis": "lightning_kd.modules.synthesis",
    "Teacher": "lightning_kd.core.teacher",
    "TeacherOutput": "lightning_kd.core.teacher",
    "kd_loss": "lightning_kd.losses.logit.kd",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_kd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
