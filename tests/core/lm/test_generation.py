"""The generation settings of on-policy (GKD) and sequence-level KD: the per-step draw and the generated batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lightning_kd.core.lm import Generation, continuation_batch


def test_the_draw_depends_only_on_seed_and_step_and_has_the_asked_rates():
    a, b = Generation(on_policy=0.3, sequence_kd=0.2), Generation(on_policy=0.3, sequence_kd=0.2)
    draws = [a.draw(s, seed=7) for s in range(4000)]
    assert draws == [b.draw(s, seed=7) for s in range(4000)]  # two ranks, or a resumed run: the same branch per step
    assert abs(draws.count("student") / 4000 - 0.3) < 0.03
    assert abs(draws.count("teacher") / 4000 - 0.2) < 0.03
    assert draws != [a.draw(s, seed=8) for s in range(4000)]
    assert {Generation().draw(s) for s in range(100)} == {"data"}
    with pytest.raises(ValueError, match=r"on_policy=0.7 \+ sequence_kd=0.5 > 1"):
        Generation(on_policy=0.7, sequence_kd=0.5)
    with pytest.raises(ValueError, match="on_policy must be a probability in"):
        Generation(on_policy=1.5)


def test_continuation_labels_skip_the_prompt_and_what_follows_the_end_of_text():
    eos, pad = 9, 0
    ids = torch.tensor([[1, 2, 3, 4, 9, 5, 6], [1, 2, 7, 8, 6, 5, 4]])  # row 0 stops at position 4
    batch = continuation_batch(ids, prompt_len=2, length=8, eos_token_id=eos, pad_token_id=pad)
    assert batch.inputs["input_ids"].tolist() == [[1, 2, 3, 4, 9, 5, 6, 0], [1, 2, 7, 8, 6, 5, 4, 0]]
    assert batch.targets.tolist() == [[-100, -100, 3, 4, 9, -100, -100, -100], [-100, -100, 7, 8, 6, 5, 4, 0]]
    assert batch.inputs["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]]
    assert batch.index is None


def test_the_settings_are_one_frozen_object():
    g = Generation(on_policy=0.5, prompt_len=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.on_policy = 1.0  # type: ignore[misc]
    assert dataclasses.asdict(g) == {"on_policy": 0.5, "sequence_kd": 0.0, "prompt_len": 8, "temperature": 1.0}
