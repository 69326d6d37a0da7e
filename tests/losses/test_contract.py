"""Contract every loss exported from ``lightning_kd.losses`` obeys, parametrised over ``__all__``.

A finite fp32 0-d tensor, gradient reaching the student tensors (and trainable parts), none reaching the
teacher, bf16-safe, module == function, runnable docstring examples, and no Lightning import.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from torch import Tensor, nn

import lightning_kd.losses as losses


@dataclass
class Case:
    """``call(students, teachers)`` computes the loss; ``params`` are trainable parts that need gradient."""

    call: Callable[[list[Tensor], list[Tensor]], Tensor]
    students: list[Tensor]
    teachers: list[Tensor]
    params: list[nn.Parameter] = field(default_factory=list)
    # pure math gives the fp32 value on bf16-rounded inputs under autocast; a loss that runs a matmul of its own
    # (an lm head, a regressor) gets autocast's bf16 matmul instead
    pure_math: bool = True


def _leaf(*shape: int) -> Tensor:
    return torch.randn(*shape).requires_grad_(True)


# (function, module class, student shapes, teacher shapes) for losses whose module has default options.
PAIRS = [
    (losses.kd_loss, losses.KDLoss, [(4, 10)], [(4, 10)]),
    (losses.fitnet_loss, losses.FitNetLoss, [(2, 3, 4, 4)], [(2, 3, 4, 4)]),
    (losses.at_loss, losses.ATLoss, [(2, 3, 8, 8)], [(2, 5, 4, 4)]),
    (losses.nst_loss, losses.NSTLoss, [(2, 3, 4, 4)], [(2, 5, 8, 8)]),
    (losses.fsp_loss, losses.FSPLoss, [(2, 3, 8, 8), (2, 4, 4, 4)], [(2, 3, 8, 8), (2, 4, 4, 4)]),
    (losses.feature_match_loss, losses.FeatureMatchLoss, [(2, 3, 4, 4)], [(2, 3, 4, 4)]),
    (losses.sp_loss, losses.SPLoss, [(4, 3, 4, 4)], [(4, 6, 2, 2)]),
    (losses.rkd_loss, losses.RKDLoss, [(5, 8)], [(5, 12)]),
    (losses.pkt_loss, losses.PKTLoss, [(5, 8)], [(5, 12)]),
    (losses.cc_loss, losses.CCLoss, [(5, 8)], [(5, 12)]),
    (losses.dist_loss, losses.DISTLoss, [(4, 10)], [(4, 10)]),
    (losses.logit_standardized_kd_loss, losses.LogitStandardizedKDLoss, [(4, 10)], [(4, 10)]),
    (losses.reverse_kd_loss, losses.ReverseKDLoss, [(4, 10)], [(4, 10)]),
    (losses.js_kd_loss, losses.JSKDLoss, [(4, 10)], [(4, 10)]),
]

# Losses that also take class-index targets, called as loss(*students, *teachers, targets); label smoothing
# has no teacher (its case passes no teacher tensors, so only its gradient to the student is checked).
TARGETS = torch.tensor([3, 0, 9, 3])
TARGET_PAIRS = [
    (losses.dkd_loss, losses.DKDLoss, [(4, 10)], [(4, 10)]),
    (losses.label_smoothing_loss, losses.LabelSmoothingLoss, [(4, 10)], []),
]

# Exports that are helpers, not losses: no contract case.
HELPERS = {
    "dkd_warmup",
    "confidence_weights",
    "TOKEN_DIVERGENCES",
    "TokenDistillSums",
    "reduce_token_loss",
    "Divergence",  # the options object: its rows are checked through divergence_rows
    "divergence_kinds",
    "kl_rows",  # a primitive on two log-probability tensors (gradient to both by design), used by every divergence
    "decode_lm_topk",  # rebuilds a stored teacher distribution: no student side
    "topk_bucket_logprobs",  # the two bucketed distributions; their loss is topk_bucket_distill_loss
    "mapped_logprobs",  # the two distributions over shared tokens; their loss is cross_tokenizer_div_sum
    "shared_ids",  # the mapped ids of a vocabulary map
    "token_eval_sums",  # evaluation sums under no_grad
    "BatchNormStatistics",  # forward hooks that collect statistics; their loss is bn_statistics_loss
    "Embed",  # CRD's projection head and memory bank: checked through CRDLoss
    "ContrastMemory",
}


def _plain(loss: Callable[..., Tensor], s_shapes: list, t_shapes: list) -> Callable[[], Case]:
    return lambda: Case(
        lambda s, t: loss(*s, *t), [_leaf(*shape) for shape in s_shapes], [_leaf(*shape) for shape in t_shapes]
    )


def _with_targets(loss: Callable[..., Tensor], s_shapes: list, t_shapes: list) -> Callable[[], Case]:
    return lambda: Case(
        lambda s, t: loss(*s, *t, TARGETS),
        [_leaf(*shape) for shape in s_shapes],
        [_leaf(*shape) for shape in t_shapes],
    )


def _dkd_terms() -> Case:
    # dkd_terms returns (TCKD, NCKD); their sum is the DKD loss with alpha = beta = 1.
    return Case(lambda s, t: sum(losses.dkd_terms(s[0], t[0], TARGETS)), [_leaf(4, 10)], [_leaf(4, 10)])


def _vid_function() -> Case:
    # vid_loss(pred_mean, teacher, log_scale): pred_mean and log_scale are both on the student side.
    return Case(lambda s, t: losses.vid_loss(s[0], t[0], s[1]), [_leaf(2, 3, 4, 4), _leaf(3)], [_leaf(2, 3, 4, 4)])


def _vid_module() -> Case:
    module = losses.VIDLoss(student_channels=3, teacher_channels=5)
    return Case(lambda s, t: module(*s, *t), [_leaf(2, 3, 8, 8)], [_leaf(2, 5, 4, 4)], list(module.parameters()))


def _crd_module() -> Case:
    module = losses.CRDLoss(student_dim=8, teacher_dim=12, n_data=50, feat_dim=8, num_negatives=16)
    index = torch.tensor([0, 7, 19, 42, 49])
    return Case(lambda s, t: module(*s, *t, index), [_leaf(5, 8)], [_leaf(5, 12)], list(module.parameters()))


def _crd_nce() -> Case:
    # scores are positive (exp of something); the student side here is the score matrix itself
    return Case(lambda s, t: losses.crd_nce_loss(s[0].float().exp(), n_data=50), [_leaf(4, 9)], [])


def _ensemble() -> Case:
    weights = torch.tensor([0.25, 0.75])
    return Case(lambda s, t: losses.ensemble_kd_loss(s[0], t[0], weights), [_leaf(4, 10)], [_leaf(2, 4, 10)])


def _per_teacher() -> Case:
    return Case(lambda s, t: losses.per_teacher_kd(s[0], t[0]).mean(), [_leaf(4, 10)], [_leaf(2, 4, 10)])


def _dml() -> Case:
    # every student is a "student" here: each one's loss reaches only itself, the sum reaches all
    return Case(lambda s, t: losses.dml_losses(s, TARGETS).sum(), [_leaf(4, 10), _leaf(4, 10)], [])


def _discriminator() -> Case:
    # the discriminator's logits on student and teacher outputs: both are the discriminator's (trained) side
    return Case(lambda s, t: losses.discriminator_loss(s[0], s[1]), [_leaf(4), _leaf(4)], [])


def _fooling() -> Case:
    return Case(lambda s, t: losses.fooling_loss(s[0]), [_leaf(4)], [])


TOKEN_MASK = torch.tensor([True, True, False, True, True, False])


def _token(fn: Callable[..., Tensor], **options: float) -> Callable[[], Case]:
    # per-token values (N,) on (tokens, vocab) rows, masked: their mean over valid tokens is the loss
    return lambda: Case(
        lambda s, t: fn(s[0], t[0], mask=TOKEN_MASK, **options).sum() / TOKEN_MASK.sum(), [_leaf(6, 11)], [_leaf(6, 11)]
    )


def _divergence_rows() -> Case:
    jsd = losses.Divergence("jsd", beta=0.3)
    return Case(
        lambda s, t: losses.divergence_rows(s[0], t[0], jsd, 2.0, mask=TOKEN_MASK).sum() / TOKEN_MASK.sum(),
        [_leaf(6, 11)],
        [_leaf(6, 11)],
    )


TOKEN_LABELS = torch.tensor([3, -100, 0, 9, -100, 5])


def _chunked_sums(sums) -> Tensor:
    return (sums.ce_sum + sums.div_sum) / sums.num_valid


def _chunked_function() -> Case:
    return Case(
        lambda s, t: _chunked_sums(
            losses.chunked_token_distill_loss(s[0], s[1], None, t[0], t[1], None, TOKEN_LABELS, chunk_size=4)
        ),
        [_leaf(6, 8), _leaf(10, 8)],
        [_leaf(6, 12), _leaf(10, 12)],
        pure_math=False,
    )


def _topk_uniform() -> Case:
    # the teacher's top-3 log-probabilities of a 10-token vocabulary: the stored side, no gradient to it
    return Case(
        lambda s, t: _chunked_sums(
            losses.topk_uniform_distill_loss(
                s[0], t[0].log_softmax(-1).topk(3).values, torch.arange(3).expand(6, 3), TOKEN_LABELS
            )
        ),
        [_leaf(6, 10)],
        [_leaf(6, 10)],
        pure_math=False,  # the stored side is made in the call, under autocast
    )


def _naive_token() -> Case:
    return Case(
        lambda s, t: _chunked_sums(losses.naive_token_distill_loss(s[0], t[0], TOKEN_LABELS, divergence="tv")),
        [_leaf(6, 10)],
        [_leaf(6, 10)],
        pure_math=False,  # the stored side is made in the call, under autocast
    )


def _topk_bucket() -> Case:
    return Case(
        lambda s, t: _chunked_sums(
            losses.topk_bucket_distill_loss(
                s[0], t[0].log_softmax(-1).topk(3).values, torch.arange(3).expand(6, 3), TOKEN_LABELS, divergence="jsd"
            )
        ),
        [_leaf(6, 10)],
        [_leaf(6, 10)],
        pure_math=False,  # the stored side is made in the call, under autocast
    )


DRAWS = torch.tensor([[1, 1, 4, 7], [0, 2, 2, 2], [9, 3, 3, 5], [6, 6, 6, 6], [8, 1, 0, 2], [4, 4, 5, 9]])


def _sampled() -> Case:
    # four tokens drawn from the teacher per position (fixed ids here) and its log-probabilities at them
    return Case(
        lambda s, t: _chunked_sums(
            losses.sampled_distill_loss(s[0], t[0].log_softmax(-1).gather(-1, DRAWS), DRAWS, TOKEN_LABELS)
        ),
        [_leaf(6, 10)],
        [_leaf(6, 10)],
        pure_math=False,  # the stored side is made in the call, under autocast
    )


def _sampled_rows() -> Case:
    return Case(
        lambda s, t: losses.sampled_divergence(
            s[0].float().log_softmax(-1), t[0].float().log_softmax(-1).gather(-1, DRAWS), DRAWS, "jsd"
        ).sum(),
        [_leaf(6, 10)],
        [_leaf(6, 10)],
    )


def _chunked_sparse() -> Case:
    return Case(
        lambda s, t: _chunked_sums(
            losses.chunked_sparse_distill_loss(
                s[0],
                s[1],
                None,
                *t[0].log_softmax(-1).topk(3),
                TOKEN_LABELS,
                loss=losses.topk_bucket_distill_loss,
                chunk_size=4,
            )  # fmt: skip
        ),
        [_leaf(6, 8), _leaf(10, 8)],
        [_leaf(6, 10)],
        pure_math=False,
    )


def _chunked_ce() -> Case:
    # the student alone (no teacher): the chunked head's cross-entropy
    return Case(
        lambda s, t: (lambda ce, n: ce / n)(
            *losses.chunked_cross_entropy(s[0], s[1], None, TOKEN_LABELS, chunk_size=4)
        ),
        [_leaf(6, 8), _leaf(10, 8)],
        [],
        pure_math=False,
    )


def _cross_map() -> Tensor:
    vocab_map = torch.full((14,), -1)
    vocab_map[torch.tensor([0, 2, 5, 7, 13])] = torch.tensor([3, 0, 9, 4, 6])
    return vocab_map


def _cross_heads() -> Case:
    # student hidden states + head (10 tokens) against a teacher of another vocabulary (14), chunked
    return Case(
        lambda s, t: losses.cross_tokenizer_div_sum(
            s[0],
            t[0],
            student_head=(s[1], None),
            teacher_head=(t[1], None),
            vocab_map=_cross_map(),
            divergence="jsd",
            temperature=2.0,
            chunk_size=4,
        ),  # fmt: skip
        [_leaf(6, 8), _leaf(10, 8)],
        [_leaf(6, 5), _leaf(14, 5)],
        pure_math=False,  # the heads run under autocast
    )


CASES: dict[str, Callable[[], Case]] = {
    "uld_rows": lambda: Case(lambda s, t: losses.uld_rows(s[0], t[0]).sum(), [_leaf(6, 10)], [_leaf(6, 14)]),
    "cross_tokenizer_div_sum": _cross_heads,
    "ensemble_kd_loss": _ensemble,
    "per_teacher_kd": _per_teacher,
    "dml_losses": _dml,
    "discriminator_loss": _discriminator,
    "fooling_loss": _fooling,
    "forward_kl": _token(losses.forward_kl),
    "reverse_kl": _token(losses.reverse_kl, temperature=2.0),
    "generalized_jsd": _token(losses.generalized_jsd, beta=0.3),
    "skew_forward_kl": _token(losses.skew_forward_kl, skew=0.1),
    "skew_reverse_kl": _token(losses.skew_reverse_kl, skew=0.1),
    "total_variation": _token(losses.total_variation),
    "token_divergence": _token(losses.token_divergence, divergence=losses.Divergence("jsd", beta=0.5)),
    "divergence_rows": _divergence_rows,
    "chunked_token_distill_loss": _chunked_function,
    "topk_uniform_distill_loss": _topk_uniform,
    "topk_bucket_distill_loss": _topk_bucket,
    "chunked_cross_entropy": _chunked_ce,
    "sampled_distill_loss": _sampled,
    "sampled_divergence": _sampled_rows,
    "chunked_sparse_distill_loss": _chunked_sparse,
    "naive_token_distill_loss": _naive_token,
    "vid_loss": _vid_function,
    "VIDLoss": _vid_module,
    "dkd_terms": _dkd_terms,
    "CRDLoss": _crd_module,
    "crd_nce_loss": _crd_nce,
    # data-free: the synthesiser's side (images, the teacher's outputs on them) is the trained side
    "hard_distillation_loss": _plain(losses.hard_distillation_loss, [(4, 10)], [(4, 10)]),
    # ZSKT's generator is trained through both models' outputs: both sides carry its gradient
    "disagreement": lambda: Case(lambda s, t: losses.disagreement(s[0], s[1]), [_leaf(4, 10), _leaf(4, 10)], []),
    "image_prior_tv": lambda: Case(lambda s, t: losses.image_prior_tv(s[0]), [_leaf(2, 1, 5, 5)], []),
    "image_prior_l2": lambda: Case(lambda s, t: losses.image_prior_l2(s[0]), [_leaf(2, 1, 5, 5)], []),
    "dafl_terms": lambda: Case(
        lambda s, t: sum(losses.dafl_terms(s[0], s[1]).values()), [_leaf(4, 10), _leaf(4, 8)], []
    ),
    "bn_statistics_loss": lambda: Case(  # the running statistics are buffers: constants
        lambda s, t: losses.bn_statistics_loss([(s[0], s[1], torch.zeros(6), torch.ones(6))]), [_leaf(6), _leaf(6)], []
    ),
}
for _fn, _module, _s, _t in PAIRS:
    CASES[_fn.__name__] = _plain(_fn, _s, _t)
    CASES[_module.__name__] = _plain(_module(), _s, _t)
for _fn, _module, _s, _t in TARGET_PAIRS:
    CASES[_fn.__name__] = _with_targets(_fn, _s, _t)
    CASES[_module.__name__] = _with_targets(_module(), _s, _t)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_every_export_has_a_contract_case() -> None:
    exported = set(losses.__all__) - HELPERS
    assert exported == set(CASES), "add a contract case for every loss exported from lightning_kd.losses"


@pytest.mark.parametrize("name", sorted(CASES))
def test_finite_scalar_gradient_to_student_only(name: str) -> None:
    case = CASES[name]()
    loss = case.call(case.students, case.teachers)
    assert loss.shape == () and loss.dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    for tensor in case.students + case.params:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
        assert tensor.grad.abs().sum() > 0
    for tensor in case.teachers:
        assert tensor.grad is None


@pytest.mark.parametrize("name", sorted(CASES))
def test_bf16_autocast_gives_finite_fp32(name: str) -> None:
    case = CASES[name]()
    students = [s.detach().bfloat16().requires_grad_(True) for s in case.students]
    teachers = [t.detach().bfloat16() for t in case.teachers]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = case.call(students, teachers)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(s.grad is not None for s in students)
    if not case.params and case.pure_math:  # same as fp32 on the same (bf16-rounded) values
        reference = case.call([s.detach().float() for s in students], [t.float() for t in teachers])
        torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fn, module_cls, s_shapes, t_shapes", PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_module_equals_function_with_defaults(fn, module_cls, s_shapes, t_shapes) -> None:
    students = [torch.randn(*shape) for shape in s_shapes]
    teachers = [torch.randn(*shape) for shape in t_shapes]
    torch.testing.assert_close(module_cls()(*students, *teachers), fn(*students, *teachers))


@pytest.mark.parametrize("fn, module_cls, s_shapes, t_shapes", TARGET_PAIRS, ids=[p[1].__name__ for p in TARGET_PAIRS])
def test_module_equals_function_with_defaults_and_targets(fn, module_cls, s_shapes, t_shapes) -> None:
    students = [torch.randn(*shape) for shape in s_shapes]
    teachers = [torch.randn(*shape) for shape in t_shapes]
    torch.testing.assert_close(module_cls()(*students, *teachers, TARGETS), fn(*students, *teachers, TARGETS))


LOSS_MODULES = [m.name for m in pkgutil.walk_packages(losses.__path__, prefix="lightning_kd.losses.") if not m.ispkg]


@pytest.mark.parametrize("module_name", LOSS_MODULES)
def test_docstring_examples_run(module_name: str) -> None:
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


@pytest.mark.parametrize("module_name", LOSS_MODULES)
def test_losses_import_only_torch(module_name: str) -> None:
    source = open(importlib.import_module(module_name).__file__, encoding="utf-8").read()
    assert "import lightning\n" not in source and "from lightning " not in source
    assert "from lightning." not in source.replace("from lightning_kd.", "")
