"""Token-level (language-model) distillation losses: per-token divergences (the divergence core on ``(tokens, V)``
rows), the chunked lm-head loss, the top-k (sparse) and sampled teachers' losses, and evaluation sums."""

from types import ModuleType as _ModuleType

from lightning_kd.losses.token.chunked import (
    TokenDistillSums,
    chunked_cross_entropy,
    chunked_token_distill_loss,
    naive_token_distill_loss,
)
from lightning_kd.losses.token.cross import cross_tokenizer_div_sum, mapped_logprobs, shared_ids, uld_rows
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
from lightning_kd.losses.token.sampled import sampled_distill_loss, sampled_divergence
from lightning_kd.losses.token.sparse import (
    decode_lm_topk,
    topk_bucket_distill_loss,
    topk_bucket_logprobs,
    topk_uniform_distill_loss,
)
from lightning_kd.losses.token.sparse_chunked import chunked_sparse_distill_loss

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))
