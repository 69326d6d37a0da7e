"""Distillation losses: pure functions on tensors (like ``torch.nn.functional``) and thin modules.

Argument order everywhere: student first, then teacher, then options. Losses import only torch.

- :mod:`~lightning_kd.losses.divergence`: the divergence core — one per-row implementation of forward/reverse KL,
  generalised JSD(β), skew KL and TV, with the options in one :class:`Divergence`; classifier and token losses
  both use it;
- :mod:`~lightning_kd.losses.logit`: Hinton KD (any divergence), DKD, DIST, logit-standardised KD, label
  smoothing, and the schemes' maths (multi-teacher, mutual learning, adversarial);
- :mod:`~lightning_kd.losses.feature`, :mod:`~lightning_kd.losses.relation`: FitNets, AT, NST, VID, FSP, feature
  matching; SP, RKD, PKT, CC;
- :mod:`~lightning_kd.losses.contrastive`: CRD and its memory bank;
- :mod:`~lightning_kd.losses.data_free`: what a data-free synthesiser optimises (BatchNorm statistics, image
  priors, DAFL's terms, ZSKT's disagreement);
- :mod:`~lightning_kd.losses.token` (language models, ``(tokens, vocab)`` rows with a mask): per-token divergences,
  the chunked lm-head loss that never holds the (tokens × vocab) logits of both models at once, the top-k
  teacher's loss.

Every public name of the subpackages is re-exported here.
"""

from lightning_kd.losses import contrastive, data_free, feature, logit, relation, token
from lightning_kd.losses.contrastive import *  # noqa: F403
from lightning_kd.losses.data_free import *  # noqa: F403
from lightning_kd.losses.divergence import Divergence, divergence_kinds, divergence_rows, kl_rows
from lightning_kd.losses.feature import *  # noqa: F403
from lightning_kd.losses.logit import *  # noqa: F403
from lightning_kd.losses.relation import *  # noqa: F403
from lightning_kd.losses.token import *  # noqa: F403

__all__ = sorted(
    {
        "Divergence",
        "divergence_kinds",
        "divergence_rows",
        "kl_rows",
        *(name for sub in (contrastive, data_free, feature, logit, relation, token) for name in sub.__all__),
    }
)
