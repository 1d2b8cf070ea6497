"""The Wilson and t intervals against figures worked out by hand from their formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mdeberta.xnli.intervals import Z95, mean_interval, t95, wilson


def test_wilson_by_hand():
    # 40 of 50: p = 0.8, z^2/n = 0.076829; centre (0.8 + 0.038415) / 1.076829 = 0.778594,
    # half 1.959964 * sqrt(0.0032 + 0.000384) / 1.076829 = 0.108966
    low, high = wilson(40 / 50, 50)
    assert (low, high) == (pytest.approx(0.6696, abs=1e-4), pytest.approx(0.8876, abs=1e-4))
    assert Z95 == pytest.approx(1.959964, abs=1e-6)


def test_wilson_at_the_ends_stays_within_0_and_1():
    low, high = wilson(0 / 20, 20)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=1e-4)  # a width at 0 of 20, unlike p +- z se
    low, high = wilson(20 / 20, 20)
    assert high == 1.0 and low == pytest.approx(0.8389, abs=1e-4)
    for n in (1, 7, 5010):
        accuracy = np.arange(n + 1) / n
        low, high = wilson(accuracy, n)
        assert (0 <= low).all() and (low <= accuracy).all() and (accuracy <= high).all() and (high <= 1).all()


def test_wilson_elementwise_on_tables():
    accuracy = pd.DataFrame({"en": [0.8, 0.0], "fr": [0.5, 1.0]})
    low, high = wilson(accuracy, pd.DataFrame({"en": [50, 20], "fr": [4, 20]}))
    assert low.en[0] == pytest.approx(0.6696, abs=1e-4) and low.en[1] == 0.0 and high.fr[1] == 1.0


def test_t_quantiles():
    assert [t95(1), t95(2), t95(4), t95(30)] == [12.706, 4.303, 2.776, 2.042]
    assert t95(100) == 2.042  # beyond the table: the value for 30, a little wider than 1.960
    with pytest.raises(ValueError, match="at least two values"):
        t95(0)


def test_mean_interval_by_hand():
    # 60, 70, 80: mean 70, std 10; 4.303 * 10 / sqrt(3) = 24.8434
    values = pd.Series([60.0, 70.0, 80.0])
    low, high = mean_interval(values.mean(), values.std(ddof=1), len(values))
    assert (low, high) == (pytest.approx(45.1566, abs=1e-4), pytest.approx(94.8434, abs=1e-4))
