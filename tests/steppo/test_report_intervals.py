"""The intervals `stepgym train` prints: Wilson for one success rate, Newcombe's paired interval for a gain."""

from __future__ import annotations

import random

import pytest

from steppo.report import paired_gain, wilson_interval


def _pairs(both: int, gained: int, lost: int, neither: int) -> tuple[str, str]:
    """(before, after) outcome strings with the given 2x2 table (shuffled: the order must not matter)."""
    pairs = [("1", "1")] * both + [("0", "1")] * gained + [("1", "0")] * lost + [("0", "0")] * neither
    random.Random(0).shuffle(pairs)
    return "".join(b for b, _ in pairs), "".join(a for _, a in pairs)


def test_wilson_matches_the_published_value():
    # Newcombe (1998), single proportion, 81/263: Wilson score interval 0.2553 to 0.3662
    lo, hi = wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=5e-4) and hi == pytest.approx(0.3662, abs=5e-4)


def test_wilson_edges_stay_inside_zero_one():
    assert wilson_interval(0, 8)[0] == 0.0 and 0.3 < wilson_interval(0, 8)[1] < 0.4
    assert wilson_interval(8, 8)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_paired_gain_matches_newcombes_worked_example():
    # Newcombe (1998), paired data, table (36, 12, 2, 0): method 10 gives 0.0569 to 0.3404
    before, after = _pairs(both=36, gained=12, lost=2, neither=0)
    g = paired_gain(before, after)
    assert g["gain"] == pytest.approx(0.2)
    assert g["gain_low"] == pytest.approx(0.0569, abs=5e-4) and g["gain_high"] == pytest.approx(0.3404, abs=5e-4)
    assert (g["gained"], g["lost"], g["n"]) == (12, 2, 50)


def test_paired_gain_with_a_positive_correlation_matches_altmans_example():
    # Altman et al., Statistics with Confidence (2000), table 6.2 (14, 5, 0, 22): 0.122, 0.011 to 0.226
    # (the correlation's continuity correction applies here)
    g = paired_gain(*_pairs(both=14, gained=5, lost=0, neither=22))
    assert g["gain"] == pytest.approx(5 / 41)
    assert g["gain_low"] == pytest.approx(0.011, abs=5e-4) and g["gain_high"] == pytest.approx(0.226, abs=5e-4)


def test_an_unchanged_policy_has_no_gain_and_an_interval_around_zero():
    before, _ = _pairs(both=20, gained=0, lost=0, neither=44)
    g = paired_gain(before, before)
    assert g["gain"] == 0.0 and g["gain_low"] < 0.0 < g["gain_high"]
    assert g["before"] == g["after"] == pytest.approx(20 / 64)
    # few seeds: identical outcomes still leave a wide interval (8 seeds say little)
    small = paired_gain("11110000", "11110000")
    assert small["gain_high"] > 0.15 and small["gain_low"] < -0.15


def test_pairing_narrows_the_interval_when_the_same_seeds_succeed():
    # the same marginals (24/64 -> 40/64): concordant seeds make the paired interval narrower
    paired = paired_gain(*_pairs(both=24, gained=16, lost=0, neither=24))
    mixed = paired_gain(*_pairs(both=15, gained=25, lost=9, neither=15))
    assert paired["gain"] == pytest.approx(mixed["gain"])
    assert paired["gain_high"] - paired["gain_low"] < mixed["gain_high"] - mixed["gain_low"]
    assert paired["gain_low"] > 0.1


@pytest.mark.parametrize("before, after", [("0101", "011"), ("", "")])
def test_outcomes_of_different_lengths_are_a_clear_error(before, after):
    with pytest.raises(ValueError, match="equally long"):
        paired_gain(before, after)
