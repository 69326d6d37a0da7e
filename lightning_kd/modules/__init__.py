"""The LightningModules: distillation (one teacher), multi-teacher, adversarial, mutual learning, plain
classification (teachers and the student-alone baseline), and causal language models (plain and distilled).
Each composes the core components (teacher, batch, feature terms) and adds only what is its own."""

from types import ModuleType as _ModuleType

from lightning_kd.modules.adversarial import AdversarialDistillation
from lightning_kd.modules.causal_lm import CausalLMDistillation, CausalLMModule
from lightning_kd.modules.classification import ClassificationModule
from lightning_kd.modules.common import BaseModule
from lightning_kd.modules.cross_tokenizer import CrossTokenizerDistillation
from lightning_kd.modules.distillation import DistillationModule
from lightning_kd.modules.multi_teacher import MultiTeacherDistillation
from lightning_kd.modules.mutual import MutualLearning

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))
