"""On CPU, TRL's fused LM head must score only the positions that have a label, and give what the full projection
gives: the same per-token fields and gradients."""

import pytest
import torch

from dpo_scale.compact_lm_head import compact_lm_head_on_cpu
from tests.test_prefix_sharing import FIELDS, forward, fused_model, preference_batch


@pytest.fixture
def trl_utils(monkeypatch):
    """trl.trainer.utils, with its `_use_triton` put back after the test."""
    import trl.trainer.utils as trl_utils

    monkeypatch.setattr(trl_utils, "_use_triton", trl_utils._use_triton)
    return trl_utils


def rows_scored(trl_utils, monkeypatch) -> list[int]:
    """Record how many rows each call of the fused head's kernel projects."""
    kernel = trl_utils._ChunkedLogProbFunction
    seen: list[int] = []

    class Counting(kernel):
        @staticmethod
        def forward(ctx, hidden, *args):
            seen.append(hidden.shape[0])
            return kernel.forward(ctx, hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Counting)
    return seen


def labelled_positions(batch: dict) -> int:
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    return int((labels[:, 1:] != -100).sum())


def test_cpu_head_scores_only_labelled_positions(untrained_tiny_model, trl_utils, monkeypatch):
    batch = preference_batch()
    model = fused_model(untrained_tiny_model, "eager", share=False)
    seen = rows_scored(trl_utils, monkeypatch)
    forward(model, batch)
    rows, width = batch["input_ids"].shape
    assert seen == [rows * (width - 1)]  # TRL 1.16 on CPU: every position
    assert compact_lm_head_on_cpu()
    forward(model, batch)
    assert seen[1] == labelled_positions(batch) < seen[0]


def test_compact_head_gives_the_full_heads_fields_and_gradients(untrained_tiny_model, trl_utils):
    batch = preference_batch()
    model = fused_model(untrained_tiny_model, "eager", share=False)
    results = []
    for compact in (False, True):
        if compact:
            assert compact_lm_head_on_cpu()
        model.zero_grad()
        out = forward(model, batch)
        weights = torch.linspace(0.5, 1.5, out["log_probs"].numel()).view_as(out["log_probs"])
        (out["log_probs"] * weights).sum().backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (full, full_grads), (compact, compact_grads) = results
    for field in FIELDS:
        if field == "is_top1":
            assert torch.equal(compact[field], full[field])
        else:
            torch.testing.assert_close(compact[field], full[field], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compact["loss"], full["loss"])
    assert compact_grads.keys() == full_grads.keys() and full_grads
    for name, grad in full_grads.items():
        torch.testing.assert_close(compact_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_compacting_twice_wraps_once(trl_utils):
    assert compact_lm_head_on_cpu()
    wrapped = trl_utils._use_triton
    assert compact_lm_head_on_cpu()
    assert trl_utils._use_triton is wrapped
    assert wrapped(torch.device("cpu"))


def test_a_trl_without_the_decision_is_left_alone(trl_utils, monkeypatch, caplog):
    monkeypatch.delattr(trl_utils, "_use_triton")
    assert not compact_lm_head_on_cpu()
    assert "scores every position" in caplog.text
