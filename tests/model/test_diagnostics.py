"""Collapse made visible: active units (Burda et al.'s activity) and the warning that names the knobs."""

import numpy as np
import pytest

from pipeline.model.diagnostics import ACTIVITY_THRESHOLD, active_units, collapse_warning


def test_active_units_count_dimensions_whose_mean_varies_over_x():
    rng = np.random.default_rng(0)
    # constant
    z_mean = np.concatenate(
        [
            rng.normal(0, 1.0, (2000, 3)),  # informative: Var ≈ 1
            rng.normal(0, 0.05, (2000, 4)),  # Var ≈ 0.0025 < 0.01: collapsed
            np.full((2000, 1), 0.7),
        ],
        axis=1,
    )
    active = active_units(z_mean.var(axis=0))
    assert (active["count"], active["of"], active["threshold"]) == (3, 8, ACTIVITY_THRESHOLD)
    assert active["variance_of_mean"][:3] == pytest.approx([1.0] * 3, abs=0.1)
    assert active["variance_of_mean"][7] == 0.0


@pytest.mark.parametrize(
    "count, total, warns",
    [
        (0, 8, True),
        (1, 8, True),
        (2, 8, False),
        (1, 5, True),
        (2, 9, True),
        (3, 9, False),
        (1, 1, False),
    ],
)
def test_collapse_warning_below_two_units_or_a_quarter(count, total, warns):
    warning = collapse_warning({"count": count, "of": total, "threshold": ACTIVITY_THRESHOLD})
    assert (warning is not None) == warns
    if warns:
        assert f"only {count} of {total} latent units are active" in warning
        assert "loss.kl_warmup_epochs" in warning and "loss.free_bits" in warning
