"""Fairness metrics against hand computations (K = 2 and K = 4, an empty group, a single prompt, a target)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invgen.metrics.fairness import (
    bias_score,
    bias_score_batch,
    counts_by_prompt,
    delta_ratio,
    fairness_discrepancy,
    fairness_metrics,
    fairness_summary,
    kl_divergence,
    normalized_entropy,
    shen_bias,
)

LN2 = math.log(2)


def test_k2_by_hand():
    # counts [3, 1]: p = (3/4, 1/4), u = (1/2, 1/2)
    c = [3, 1]
    assert bias_score(c) == pytest.approx(abs(3 - 1) / 4 / 1)  # one pair
    assert fairness_discrepancy(c) == pytest.approx(math.sqrt(0.25**2 + 0.25**2))
    assert kl_divergence(c) == pytest.approx(0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert normalized_entropy(c) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / LN2)
    # Δ: mean over the two values of |p − ½| / ½ = (0.5 + 0.5) / 2
    assert fairness_metrics(c)["delta"] == pytest.approx(0.5)
    assert fairness_metrics(c)["kl_uniform"] == fairness_metrics(c)["kl_target"]


def test_k4_by_hand():
    # counts [4, 2, 1, 1], n = 8: pair differences 2, 3, 3, 1, 1, 0 → 10; 6 pairs
    c = [4, 2, 1, 1]
    assert bias_score(c) == pytest.approx(10 / 8 / 6)
    # p − u = (0.25, 0, −0.125, −0.125)
    assert fairness_discrepancy(c) == pytest.approx(math.sqrt(0.25**2 + 2 * 0.125**2))
    # KL = ½ ln 2 + ¼ ln 1 + 2 · ⅛ ln ½ = ¼ ln 2
    assert kl_divergence(c) == pytest.approx(0.25 * LN2)
    # H = ½ ln 2 + ¼ ln 4 + 2 · ⅛ ln 8 = 1.75 ln 2; log K = 2 ln 2
    assert normalized_entropy(c) == pytest.approx(1.75 / 2)
    # Δ = mean(|½ − ¼|/¼, 0, |⅛ − ¼|/¼, |⅛ − ¼|/¼) = (1 + 0 + ½ + ½) / 4
    assert fairness_metrics(c)["delta"] == pytest.approx(0.5)


def test_empty_group_k4():
    # Two of four values never appear: counts [2, 2, 0, 0]
    c = [2, 2, 0, 0]
    # pairs: |2−2| = 0, four pairs |2−0| = 2, |0−0| = 0 → 8 / 4 / 6
    assert bias_score(c) == pytest.approx(1 / 3)
    assert fairness_discrepancy(c) == pytest.approx(math.sqrt(4 * 0.25**2))
    assert kl_divergence(c) == pytest.approx(2 * 0.5 * math.log(0.5 / 0.25))  # zeros contribute 0
    assert normalized_entropy(c) == pytest.approx(LN2 / math.log(4))
    assert fairness_metrics(c)["delta"] == pytest.approx(1.0)


def test_extremes():
    assert bias_score([5, 5]) == 0.0 and bias_score([5, 0]) == 1.0
    assert bias_score([7, 0, 0, 0]) == pytest.approx(3 * 7 / 7 / 6)  # one value only, K = 4: 2/K
    assert normalized_entropy([5, 0]) == 0.0 and normalized_entropy([1, 1, 1]) == pytest.approx(1.0)
    assert kl_divergence([1, 1]) == 0.0


def test_prompt_without_images_is_nan():
    m = fairness_metrics([0, 0])
    assert all(math.isnan(v) for v in m.values())


def test_target_75_25_by_hand():
    t = [0.75, 0.25]
    # exactly at the target: every distance is 0, entropy ratio 1
    m = fairness_metrics([3, 1], t)
    assert m["bias_score"] == pytest.approx(0) and m["fairness_discrepancy"] == pytest.approx(0)
    assert m["kl_target"] == pytest.approx(0) and m["delta"] == pytest.approx(0)
    assert m["entropy"] == pytest.approx(1.0)
    assert m["kl_uniform"] == pytest.approx(kl_divergence([3, 1]))  # named for uniform, ignores the target
    # a 50/50 set against 75/25: reweighted counts c_k / (K p*_k) = (1/1.5, 1/0.5)
    m = fairness_metrics([1, 1], t)
    assert m["bias_score"] == pytest.approx(abs(1 / 1.5 - 2) / (1 / 1.5 + 2))  # = 0.5
    assert m["fairness_discrepancy"] == pytest.approx(math.sqrt(2 * 0.25**2))
    assert m["kl_target"] == pytest.approx(0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    h_target = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert m["entropy"] == pytest.approx(LN2 / h_target)  # more spread than the target: above 1
    assert m["delta"] == pytest.approx((0.25 / 0.75 + 0.25 / 0.25) / 2)
    # TIME's one-value form: |p_0 − p*_0| / p*_0
    assert delta_ratio([[1, 1]], t, value=0) == pytest.approx(0.25 / 0.75)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.37, 0.5, 0.9, 1.0])
def test_shen_k2_is_abs_2p_minus_1(p):
    assert shen_bias([p, 1 - p]) == pytest.approx(abs(2 * p - 1))
    assert shen_bias([p, 1 - p]) == pytest.approx(bias_score([100 * p, 100 * (1 - p)]))


def test_delta_ratio_mean_over_prompts():
    # prompt 1: [3, 1] → 0.5; prompt 2: [1, 1] → 0
    assert delta_ratio([[3, 1], [1, 1]]) == pytest.approx(0.25)
    # K = 2, uniform: TIME's |p − ½| / ½ for either value
    assert delta_ratio([[3, 1]], value=1) == pytest.approx(0.5)


def test_invalid_target():
    with pytest.raises(ValueError, match="2 positive numbers summing to 1"):
        bias_score([1, 1], [0.6, 0.6])
    with pytest.raises(ValueError, match="positive"):
        kl_divergence([1, 1], [1.0, 0.0])


def test_counts_by_prompt_keeps_order_and_counts():
    out = counts_by_prompt(["b", "a", "b", "b", "a"], [0, 1, 1, 1, 1], 3)
    assert list(out) == ["b", "a"]
    assert out["b"].tolist() == [1, 2, 0] and out["a"].tolist() == [0, 2, 0]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        counts_by_prompt(["a"], [3], 3)


def test_batch_matches_rows():
    table = np.array([[[3, 1], [2, 2]], [[0, 4], [1, 0]]])
    out = bias_score_batch(table)
    assert out.shape == (2, 2)
    assert out.tolist() == [[0.5, 0.0], [1.0, 1.0]]


def test_summary_single_prompt_equals_its_metrics():
    s = fairness_summary({"only": [3, 1]}, n_boot=200)
    assert s["overall"]["bias_score"] == pytest.approx(0.5)
    assert s["per_prompt"]["only"]["counts"] == [3, 1] and s["per_prompt"]["only"]["n"] == 4
    assert s["overall"] == {k: v for k, v in s["per_prompt"]["only"].items() if k in s["overall"]}


def test_summary_overall_is_mean_over_prompts_ignoring_empty_ones():
    s = fairness_summary({"a": [3, 1], "b": [1, 1], "none": [0, 0]}, n_boot=0)
    assert s["overall"]["bias_score"] == pytest.approx((0.5 + 0.0) / 2)
    assert s["overall"]["entropy"] == pytest.approx((0.811278124459 + 1.0) / 2)
    assert math.isnan(s["per_prompt"]["none"]["bias_score"])
    assert s["ci"] == {} and "ci" not in s["per_prompt"]["a"]


def test_bootstrap_intervals():
    # One value only: every resample is the same, so the interval has zero width.
    s = fairness_summary({"p": [10, 0]}, n_boot=300)
    assert s["per_prompt"]["p"]["ci"]["bias_score"] == [1.0, 1.0]
    # The interval narrows with more images at the same shares and holds the estimate.
    small = fairness_summary({"p": [30, 10]}, n_boot=2000, seed=1)["ci"]["bias_score"]
    large = fairness_summary({"p": [3000, 1000]}, n_boot=2000, seed=1)["ci"]["bias_score"]
    assert small[0] < 0.5 < small[1] and large[0] < 0.5 < large[1]
    assert (large[1] - large[0]) < (small[1] - small[0]) / 5  # width ∝ 1/√n: 10× fewer images → ~10× wider
    # Seeded: the same call gives the same interval.
    assert fairness_summary({"p": [30, 10]}, n_boot=2000, seed=1)["ci"]["bias_score"] == small


def test_at_target_floor_by_hand():
    # A fair model, 2 images per prompt: counts [2,0] (¼) → 1, [1,1] (½) → 0, [0,2] (¼) → 1: E = ½.
    s = fairness_summary({"p": [1, 1], "q": [2, 0]}, n_boot=20000, seed=0)
    assert s["at_target"]["bias_score"] == pytest.approx(0.5, abs=0.015)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=2, max_size=6).filter(lambda c: sum(c) > 0), st.integers(1, 9))
def test_bias_score_properties(counts, scale):
    k = len(counts)
    b = bias_score(counts)
    assert -1e-12 <= b <= 2 / k + 1e-12
    assert bias_score([scale * c for c in counts]) == pytest.approx(b)  # depends on shares only
    assert bias_score(counts[::-1]) == pytest.approx(b)  # not on the order of values
