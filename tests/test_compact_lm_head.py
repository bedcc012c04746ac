"""On CPU, TRL's fused LM head scores only the labelled positions once `score_labelled_positions_only` is on: fewer
rows through the head, the same per-token fields and gradients."""

import pytest
import torch

from dpo_scale.compact_lm_head import score_labelled_positions_only
from dpo_scale.prefix_sharing import pack_pairs, right_padded_lengths
from tests.test_prefix_sharing import FIELDS, forward, fused_model, preference_batch


@pytest.fixture
def compact_switch():
    yield score_labelled_positions_only
    score_labelled_positions_only(True)  # the default of every training run


def rows_scored(monkeypatch) -> list[int]:
    """Records how many positions each call of TRL's fused LM head projects through the head."""
    from trl.trainer import utils

    seen, apply = [], utils._ChunkedLogProbFunction.apply

    def counting(hidden, *args):
        seen.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(utils._ChunkedLogProbFunction, "apply", counting)
    return seen


@pytest.mark.parametrize("share", [False, True])
def test_only_labelled_positions_reach_the_head_with_the_same_fields_and_gradients(untrained_tiny_model, monkeypatch,
                                                                                    compact_switch, share):
    batch = preference_batch()
    model = fused_model(untrained_tiny_model, "eager", share)
    if share:  # the first packed forward is checked against TRL's rows: a forward more, before counting
        forward(model, batch)
    seen = rows_scored(monkeypatch)
    results = {}
    for compact in (False, True):
        assert compact_switch(compact) is compact
        model.zero_grad()
        out = forward(model, batch)
        weights = torch.linspace(0.5, 1.5, out["log_probs"].numel()).view_as(out["log_probs"])
        (out["log_probs"] * weights).sum().backward()
        results[compact] = out, {name: p.grad.clone() for name, p in model.named_parameters()}
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    if share:  # one prefix tree: the answers' shared tokens are scored once
        labelled = int((pack_pairs(batch["input_ids"], labels, right_padded_lengths(batch["attention_mask"]))
                        .tree.shift_labels != -100).sum())
    else:  # labels shift by one: the first token has none
        labelled = int((labels[:, 1:] != -100).sum())
    every_position = seen[0]
    assert seen[1] == labelled < every_position
    (whole, whole_grads), (compact, compact_grads) = results[False], results[True]
    for field in FIELDS:
        if field == "is_top1":
            assert torch.equal(compact[field], whole[field])
        else:
            torch.testing.assert_close(compact[field], whole[field], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(compact["loss"], whole["loss"])
    for name, grad in whole_grads.items():
        torch.testing.assert_close(compact_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_switch_is_idempotent_and_reversible(compact_switch):
    from trl.trainer import utils

    original = utils._use_triton
    while hasattr(original, "wrapped"):
        original = original.wrapped
    cpu = torch.device("cpu")
    assert compact_switch(True) and compact_switch(True)
    assert utils._use_triton(cpu) and utils._use_triton.wrapped is original
    assert not compact_switch(False)
    assert utils._use_triton is original and not utils._use_triton(cpu)


def test_other_trl_releases_are_left_alone(compact_switch, monkeypatch):
    """On a TRL release the wrapper was not checked against, nothing is patched and TRL keeps its own choice."""
    import trl
    from trl.trainer import utils

    compact_switch(False)
    original = utils._use_triton
    monkeypatch.setattr(trl, "__version__", "1.17.0")
    assert not compact_switch(True)
    assert utils._use_triton is original
