"""Hidden-state distillation for causal LMs: feature terms on decoder layers, masked to the tokens with a label,
normalised like the token loss, connectors sized before the optimizer, refused where no teacher model runs."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from lightning_kd import FeatureTerm  # noqa: E402
from lightning_kd.cache.lm_teacher import CachedLMTeacher  # noqa: E402
from lightning_kd.core.lm import TokenFeatureTerms  # noqa: E402
from lightning_kd.losses import FeatureMatchLoss  # noqa: E402
from lightning_kd.modules.causal_lm import CausalLMDistillation  # noqa: E402
from tests.lm_helpers import Batches, V, dict_batch, tiny, trainer  # noqa: E402


def hidden_term(connector: bool = False, kind: str = "mse", weight: float = 2.0) -> FeatureTerm:
    return FeatureTerm(
        "hid", FeatureMatchLoss(kind), ["model.layers.0"], ["model.layers.1"], weight=weight, connector=connector
    )


@pytest.mark.parametrize("chunk_size", [4, None])
def test_hidden_state_term_is_the_masked_token_mean_worked_out_by_hand(chunk_size):
    """loss = 0.3·CE + 0.7·KL + 2·mean over labelled tokens of (s_layer0 − t_layer1)², padding and prompt left out."""
    g = torch.Generator().manual_seed(4)
    batch = dict_batch(torch.randint(0, V, (3, 10), generator=g).tolist(), [0, 5, 8])
    module = CausalLMDistillation(
        tiny(1, hidden=32, layers=3), tiny(2, hidden=32, layers=2), alpha=0.7, chunk_size=chunk_size,
        feature_terms=[hidden_term()],
    )  # fmt: skip
    module.feature_terms.attach()
    logged = {}
    module.log_step = lambda loss, terms, **kwargs: logged.update(terms)
    loss = module.training_step(batch, 0)
    with torch.no_grad():
        s_out = module.student(input_ids=batch["input_ids"], output_hidden_states=True)
        t_out = module.teacher.model(input_ids=batch["input_ids"], output_hidden_states=True)
    y = batch["labels"][:, 1:]
    valid = y != -100
    s, t = s_out.logits[:, :-1][valid], t_out.logits[:, :-1][valid]
    ce = F.cross_entropy(s, y[valid])
    kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")
    # hidden_states[i + 1] is decoder layer i's output, except the last entry, which is after the final norm
    mask = torch.cat([valid, torch.zeros(3, 1, dtype=torch.bool)], dim=1)  # the last position has no next token
    hid = F.mse_loss(s_out.hidden_states[1][mask], t_out.hidden_states[2][mask])
    assert int(mask.sum()) == 9 + 5 + 2  # rows labelled from 0, 5 and 8 of 10
    torch.testing.assert_close(loss, 0.3 * ce + 0.7 * kl + 2.0 * hid, atol=1e-5, rtol=1e-5)
    # the term is logged on its own, unweighted
    assert not hasattr(module.feature_terms, "mask") and module.loss_weights == {  # the mask is an argument
        "ce": pytest.approx(0.3),
        "kd": 0.7,
        "hid": 2.0,
    }


def test_hidden_states_of_other_widths_train_a_linear_connector_saved_with_the_student(tmp_path):
    g = torch.Generator().manual_seed(5)
    batches = [dict_batch(torch.randint(0, V, (2, 12), generator=g).tolist(), [3, 0]) for _ in range(3)]
    teacher = tiny(1, hidden=48, layers=2)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = CausalLMDistillation(
        teacher, tiny(2, hidden=32, layers=2), chunk_size=8, feature_terms=[hidden_term(connector=True, kind="cosine")]
    )
    t = trainer(tmp_path, max_steps=3, enable_checkpointing=False, limit_val_batches=0)
    t.fit(module, Batches(batches))
    (connector,) = module.feature_terms[0].connectors
    linear = connector.proj
    assert isinstance(linear, torch.nn.Linear) and (linear.in_features, linear.out_features) == (32, 48)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # teacher untouched
    assert not module.feature_terms.attached  # hooks removed after fit
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    loaded = CausalLMDistillation.load_from_checkpoint(
        path, teacher=tiny(1, hidden=48, layers=2), student=tiny(9, hidden=32, layers=2),
        feature_terms=[hidden_term(connector=True, kind="cosine")], weights_only=False,
    )  # fmt: skip
    torch.testing.assert_close(loaded.feature_terms[0].connectors[0].proj.weight, linear.weight)


def test_connector_learns_during_fit(tmp_path):
    """The connector, sized in setup, is in the optimizer: its weights move during fit, the teacher's do not."""
    g = torch.Generator().manual_seed(6)
    batches = [dict_batch(torch.randint(0, V, (2, 12), generator=g).tolist(), [0, 0]) for _ in range(2)]
    module = CausalLMDistillation(
        tiny(1, hidden=48, layers=2), tiny(2, hidden=32, layers=2), chunk_size=None,
        feature_terms=[hidden_term(connector=True)],
    )  # fmt: skip
    seen = {}

    class Snapshot(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["start"] = pl_module.feature_terms[0].connectors[0].proj.weight.detach().clone()
            seen["in_optimizer"] = any(
                p is pl_module.feature_terms[0].connectors[0].proj.weight
                for group in trainer.optimizers[0].param_groups
                for p in group["params"]
            )

    trainer(tmp_path, max_steps=2, limit_val_batches=0, callbacks=[Snapshot()]).fit(module, Batches(batches))
    assert seen["in_optimizer"]
    assert not torch.equal(seen["start"], module.feature_terms[0].connectors[0].proj.weight)


def test_an_offline_teacher_cannot_serve_hidden_states():
    with pytest.raises(ValueError, match=r"hidden-state terms \['hid'\] need the teacher's layers.*CachedLMTeacher"):
        CausalLMDistillation(CachedLMTeacher("store-not-read"), tiny(2), chunk_size=None, feature_terms=[hidden_term()])


def test_a_layer_without_one_row_per_token_is_refused_by_name():
    terms = TokenFeatureTerms()
    with pytest.raises(ValueError, match=r"layer 'model.norm' gives features of shape \(2, 8\), not \(batch, seq"):
        terms._tokens("model.norm", "student", torch.zeros(2, 8), None)
    mask = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"features for \(2, 4\) \(batch, sequence\) positions but the batch has"):
        terms._tokens("model.layers.0", "teacher", torch.zeros(2, 4, 8), mask)
