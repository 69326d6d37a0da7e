"""Token-level (language-model) distillation losses: per-token divergences and a chunked lm-head loss."""

from lightning_kd.losses.token.chunked import (
    TokenDistillSums,
    chunked_cross_entropy,
    chunked_token_distill_loss,
    naive_token_distill_loss,
)
from lightning_kd.losses.token.divergences import TOKEN_DIVERGENCES, reduce_token_loss, token_divergence
from lightning_kd.losses.token.evaluation import token_eval_sums
from lightning_kd.losses.token.functional import (
    forward_kl,
    generalized_jsd,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    total_variation,
)
from lightning_kd.losses.token.modules import ChunkedTokenDistillLoss, TokenDivergenceLoss
from lightning_kd.losses.token.sparse import topk_bucket_distill_loss, topk_bucket_logprobs

__all__ = [
    "TOKEN_DIVERGENCES",
    "ChunkedTokenDistillLoss",
    "TokenDistillSums",
    "TokenDivergenceLoss",
    "chunked_cross_entropy",
    "chunked_token_distill_loss",
    "forward_kl",
    "generalized_jsd",
    "naive_token_distill_loss",
    "reduce_token_loss",
    "reverse_kl",
    "skew_forward_kl",
    "skew_reverse_kl",
    "token_divergence",
    "token_eval_sums",
    "topk_bucket_distill_loss",
    "topk_bucket_logprobs",
    "total_variation",
]
