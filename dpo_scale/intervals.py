"""How sure a share measured on a few dozen prompts is: Wilson score intervals.

The report sets hold 80 identity questions, 80 ordinary prompts and about 126 facts the base gets right, so one answer
moves a share by about a point: 70% of 80 first sentences is anything from 59% to 79% at 95% confidence. The Wilson
interval stays inside [0, 1] and is sound at 0% and 100%, where the normal approximation gives a zero width.
"""

from __future__ import annotations

import math

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for `successes` of `trials` (two-sided, 95% by default); (0, 1) for no trials."""
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"successes {successes} outside 0..{trials}")
    share = successes / trials
    spread = z * z / trials
    centre = (share + spread / 2) / (1 + spread)
    half = z * math.sqrt(share * (1 - share) / trials + spread / (4 * trials)) / (1 + spread)
    return max(0.0, centre - half), min(1.0, centre + half)
