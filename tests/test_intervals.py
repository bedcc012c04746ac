"""Wilson intervals (dpo_scale/intervals.py) and the eval report's table of them."""

import pytest

from dpo_scale.evaluate import eval_markdown, sampled_shares
from dpo_scale.intervals import wilson
from tests.test_merge_eval import fake_result


def test_wilson_matches_the_closed_form_and_its_edges():
    # 56 of 80 (a report set's first sentences): the textbook Wilson bounds
    assert wilson(56, 80) == pytest.approx((0.5923, 0.7894), abs=1e-4)
    # none or all: one bound at the edge, the other z^2 / (n + z^2) away from it, not a zero width
    low, high = wilson(0, 80)
    assert low == 0.0 and high == pytest.approx(1.96 ** 2 / (80 + 1.96 ** 2), abs=1e-3)
    assert wilson(80, 80) == pytest.approx((1 - high, 1.0))
    # mirror image, holds the share, narrows with more answers
    for k, n in ((3, 10), (73, 80), (121, 126)):
        low, high = wilson(k, n)
        assert low < k / n < high
        assert wilson(n - k, n) == pytest.approx((1 - high, 1 - low))
        bigger = wilson(10 * k, 10 * n)
        assert bigger[1] - bigger[0] < high - low
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(5, 4)


def test_eval_report_shows_how_many_answers_each_share_rests_on():
    result = fake_result(0.95, 0.0, 0.5, default_new=1.0, facts_kept=2 / 3)
    result["identity"]["trained"]["questions"] = 20
    result["identity_default"]["trained"]["questions"] = 20
    assert sampled_shares(result) == [("new name (system prompt)", 19, 20),
                                      ("new name (own template, no system message)", 20, 20),
                                      ("facts kept", 2, 3), ("first sentences kept", 1, 2)]
    md = eval_markdown(result, "SmolLM", "Deep SmolLM")
    low, high = wilson(19, 20)
    assert f"| new name (system prompt) | 19 of 20 | 95% | {100 * low:.0f}%–{100 * high:.0f}% |" in md
    assert "| first sentences kept | 1 of 2 | 50% |" in md
