"""Causal language models as distillation parts (pure torch):

- :mod:`~lightning_kd.core.lm.heads`: a model's lm head and final hidden states, and the checks that the chunked
  path reproduces its logits;
- :mod:`~lightning_kd.core.lm.teacher`: :class:`CausalLMTeacher`, a frozen LM teacher (logits or hidden states);
- :mod:`~lightning_kd.core.lm.token_loss`: the token-loss strategies (full logits, chunked heads);
- :mod:`~lightning_kd.core.lm.store_loss`: those of an offline store (top-k, sampled);
- :mod:`~lightning_kd.core.lm.feature_terms`: :class:`TokenFeatureTerms`, hidden-state terms on the valid tokens.
"""

from types import ModuleType as _ModuleType

from lightning_kd.core.lm.feature_terms import TokenFeatureTerms
from lightning_kd.core.lm.generation import Generation, continuation_batch
from lightning_kd.core.lm.heads import (
    UnsupportedHeadError,
    check_head_matches,
    check_plain_head,
    final_hidden,
    head_width,
    lm_head,
    unwrapped,
)
from lightning_kd.core.lm.store_loss import SampledTokenLoss, TopKTokenLoss
from lightning_kd.core.lm.teacher import CausalLMTeacher
from lightning_kd.core.lm.token_loss import (
    ChunkedTokenLoss,
    FullLogitsTokenLoss,
    StudentRows,
    TokenLoss,
    token_loss_for_model,
)

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))
