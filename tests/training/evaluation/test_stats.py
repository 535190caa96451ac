"""Paired tests and the group-sequential design (training.evaluation.stats), with the calibration
of the shadow decision: equally good models are promoted at most alpha of the time, better ones
mostly."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import special, stats
from scipy.signal import lfilter

from training.evaluation.stats import (
    alpha_spent,
    diebold_mariano,
    group_sequential_boundaries,
    long_run_variance,
    look_schedule,
    mean_difference_statistic,
    paired_test,
    sequential_design,
    sharpe_difference_test,
)
from training.promotion.models import ShadowPolicy

# ---------------------------------------------------------------------------------------------
# Long-run variance and the tests


def _ar1(rng: np.random.Generator, n: int, phi: float, *, size: int | None = None) -> np.ndarray:
    shape = (n,) if size is None else (size, n)
    return lfilter([1.0], [1.0, -phi], rng.standard_normal(shape), axis=-1)


def test_long_run_variance_of_an_ar1_matches_theory():
    rng = np.random.default_rng(0)
    for phi in (0.0, 0.3, 0.6, -0.4):
        lrv, _ = long_run_variance(_ar1(rng, 200_000, phi))
        assert lrv == pytest.approx(1.0 / (1.0 - phi) ** 2, rel=0.04), phi


def test_long_run_variance_is_vectorized_row_by_row():
    rng = np.random.default_rng(1)
    batch = _ar1(rng, 500, 0.4, size=3)
    lrv, lags = long_run_variance(batch)
    for row in range(3):
        one, one_lags = long_run_variance(batch[row])
        assert lrv[row] == pytest.approx(one) and lags[row] == pytest.approx(one_lags)


def test_diebold_mariano_by_hand_on_white_noise():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.002, 0.01, 400), rng.normal(0.0, 0.01, 400)
    d = a - b
    result = diebold_mariano(a, b, critical=1.96)
    # Prewhitening: rho, residual variance (white residuals: a bandwidth below one lag adds a
    # little), recoloured.
    u = d - d.mean()
    rho = np.dot(u[1:], u[:-1]) / np.dot(u[:-1], u[:-1])
    e = u[1:] - rho * u[:-1]
    lrv, _ = long_run_variance(d)
    assert lrv >= np.dot(e, e) / len(e) / (1 - rho) ** 2 * 0.999
    se = math.sqrt(lrv / 400)
    assert result.se == pytest.approx(se) and result.estimate == pytest.approx(d.mean())
    assert result.statistic == pytest.approx(d.mean() / se)
    assert result.p_value == pytest.approx(stats.t.sf(d.mean() / se, df=399))
    assert (result.ci_low, result.ci_high) == pytest.approx(
        (d.mean() - 1.96 * se, d.mean() + 1.96 * se)
    )
    assert result.rejects == (result.statistic >= 1.96)
    _, _, batch_statistic = mean_difference_statistic(d[None, :])
    assert batch_statistic[0] == pytest.approx(result.statistic)


def test_identical_series_decide_nothing():
    x = np.random.default_rng(3).normal(0, 0.01, 300)
    for metric in ("mean_return", "sharpe"):
        result = paired_test(x, x, metric=metric, periods_per_year=8760)
        assert result.estimate == 0.0 and result.statistic == 0.0 and not result.rejects
        assert result.p_value == 0.5


def test_a_clearly_better_series_is_detected_and_covered():
    rng = np.random.default_rng(4)
    common = rng.normal(0, 0.01, 3000)
    a = common + rng.normal(0.001, 0.003, 3000)
    b = common + rng.normal(0.0, 0.003, 3000)
    result = diebold_mariano(a, b)
    assert result.rejects and result.p_value < 1e-6
    assert result.ci_low < 0.001 < result.ci_high


def test_sharpe_difference_test_uses_the_metrics_sharpe():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.0008, 0.01, 2000), rng.normal(0.0001, 0.01, 2000)
    result = sharpe_difference_test(a, b, periods_per_year=8760)
    # METRICS.md Sharpe of a return series: mean / std(ddof=1) * sqrt(P).
    expected = (a.mean() / a.std(ddof=1) - b.mean() / b.std(ddof=1)) * math.sqrt(8760)
    assert result.estimate == pytest.approx(expected)
    assert result.se > 0 and result.statistic == pytest.approx(result.estimate / result.se)


def test_sharpe_difference_test_keeps_its_size_with_autocorrelated_fat_tails():
    rng = np.random.default_rng(6)
    n, sims, rejected = 1000, 400, 0
    for _ in range(sims):
        common = rng.standard_t(5, n)
        a = lfilter([1], [1, -0.3], 0.9 * common + 0.44 * rng.standard_t(5, n)) * 0.003 + 3e-4
        b = lfilter([1], [1, -0.3], 0.9 * common + 0.44 * rng.standard_t(5, n)) * 0.003 + 3e-4
        rejected += sharpe_difference_test(a, b, periods_per_year=8760).rejects
    # Nominal 5 %: the binomial 99 % band of 400 draws reaches 0.083.
    assert rejected / sims <= 0.083


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="equally long"):
        diebold_mariano(np.zeros(10), np.zeros(9))
    with pytest.raises(ValueError, match="at least"):
        diebold_mariano(np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        diebold_mariano(np.array([0.0, np.nan, 1.0]), np.zeros(3))
    with pytest.raises(ValueError, match="metric"):
        paired_test(np.zeros(10), np.zeros(10), metric="sortino")


# ---------------------------------------------------------------------------------------------
# Group-sequential design


def test_one_look_is_the_fixed_one_sided_test():
    assert group_sequential_boundaries((1.0,), alpha=0.05, spending="obrien_fleming") == (
        pytest.approx(float(special.ndtri(0.95))),
    )


@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock"])
def test_each_look_spends_its_share_and_all_together_at_most_alpha(spending):
    fractions = np.array([0.2, 0.45, 0.7, 1.0])
    bounds = np.array(group_sequential_boundaries(tuple(fractions), alpha=0.05, spending=spending))
    spent = np.diff(np.r_[0.0, alpha_spent(fractions, alpha=0.05, kind=spending)])
    assert spent.sum() == pytest.approx(0.05)
    assert special.ndtr(-bounds) == pytest.approx(spent)
    # Under the Brownian-motion approximation of the looks' statistics the union bound leaves
    # some alpha unspent, never more than alpha spent.
    rng = np.random.default_rng(7)
    steps = rng.standard_normal((400_000, 4)) * np.sqrt(np.diff(np.r_[0.0, fractions]))
    z = steps.cumsum(axis=1) / np.sqrt(fractions)
    assert (z >= bounds).mean(axis=0) == pytest.approx(spent, abs=1.2e-3)
    assert 0.03 < (z >= bounds).any(axis=1).mean() < 0.05


def test_look_schedule_and_design_checks():
    assert look_schedule(min_bars=500, max_bars=3000, looks=4) == (500, 1333, 2167, 3000)
    assert look_schedule(min_bars=500, max_bars=500, looks=4) == (500,)
    design = sequential_design(min_bars=500, max_bars=3000, looks=4, alpha=0.05, spending="pocock")
    assert len(design.boundaries) == 4 and all(c > 1.645 for c in design.boundaries)
    assert special.ndtr(-np.array(design.boundaries)).sum() == pytest.approx(0.05)
    with pytest.raises(ValueError):
        look_schedule(min_bars=10, max_bars=5, looks=2)
    with pytest.raises(ValueError, match="alpha"):
        sequential_design(min_bars=50, max_bars=100, looks=2, alpha=0.7, spending="pocock")
    with pytest.raises(ValueError, match="spending"):
        alpha_spent(0.5, alpha=0.05, kind="haybittle")


# ---------------------------------------------------------------------------------------------
# Calibration: many simulated shadow periods, decided as training.promotion.shadow.decide does
# (trades aside)


SIGMA = 0.003  # per-bar volatility of both strategies (about that of 1h bars)
CORRELATION = 0.8  # the two models' returns move together: they trade the same market
PHI = 0.3  # AR(1) of each strategy's own returns
DOF = 5  # Student t innovations: fat tails (kurtosis 9)


def shadow_periods(rng: np.random.Generator, sims: int, bars: int, *, margin: float = 0.0):
    """Per-bar return differences (shadow minus production) of `sims` shadow periods.

    Each strategy: a common market shock plus its own, Student-t, passed through AR(1) (phi 0.3),
    scaled by a shared stochastic volatility (log-vol AR(1) 0.98: clustering). The shadow's mean
    exceeds production's by `margin` standard deviations of the per-bar difference.
    """

    def t_noise() -> np.ndarray:
        return rng.standard_t(DOF, size=(sims, bars)) / math.sqrt(DOF / (DOF - 2))

    log_vol = lfilter([1.0], [1.0, -0.98], 0.1 * rng.standard_normal((sims, bars)), axis=1)
    vol = np.exp(log_vol - 0.01 / (1 - 0.98**2))  # mean square 1
    common = math.sqrt(CORRELATION) * t_noise()
    own = math.sqrt(1 - CORRELATION)

    def strategy() -> np.ndarray:
        return lfilter([1.0], [1.0, -PHI], common + own * t_noise(), axis=1) * math.sqrt(1 - PHI**2)

    d = SIGMA * vol * (strategy() - strategy())
    return d + margin * SIGMA * math.sqrt(2 * (1 - CORRELATION))


def _policy_design():
    defaults = {
        name: ShadowPolicy._meta.get_field(name).default
        for name in ("min_bars", "max_bars", "looks", "alpha", "spending")
    }
    return sequential_design(**defaults), defaults["alpha"]


def _promoted(d: np.ndarray, design) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(promoted by the design, promoted by testing every look at plain alpha, bars at promotion)"""
    z = np.stack([mean_difference_statistic(d[:, :n])[2] for n in design.looks])
    crossed = z >= np.array(design.boundaries)[:, None]
    naive = z >= float(special.ndtri(1 - design.alpha))
    when = np.where(crossed.any(axis=0), np.array(design.looks)[crossed.argmax(axis=0)], -1)
    return crossed.any(axis=0), naive.any(axis=0), when


def clopper_pearson(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    tail = (1 - level) / 2
    low = stats.beta.ppf(tail, hits, n - hits + 1) if hits else 0.0
    high = stats.beta.ppf(1 - tail, hits + 1, n - hits) if hits < n else 1.0
    return float(low), float(high)


@pytest.mark.slow
def test_equally_good_models_are_promoted_at_most_alpha_of_the_time():
    """12,000 shadow periods of the default policy (500 to 3,000 bars, 4 looks, 5 %,
    O'Brien-Fleming type) where both models earn the same: the design promotes fewer than alpha
    of them, with the whole 95 % Clopper-Pearson interval below alpha, while testing each look at
    a plain 5 % promotes far more (so the simulation would catch a design that does not work)."""
    design, alpha = _policy_design()
    rng = np.random.default_rng(20_261_125)
    started = time.perf_counter()
    promoted, naive = [], []
    for _ in range(6):
        p, nv, _ = _promoted(shadow_periods(rng, 2_000, design.looks[-1]), design)
        promoted.append(p)
        naive.append(nv)
    promoted, naive = np.concatenate(promoted), np.concatenate(naive)
    sims, hits = len(promoted), int(promoted.sum())
    rate = hits / sims
    low, high = clopper_pearson(hits, sims)
    print(
        f"\nfalse promotions: {hits}/{sims} = {rate:.2%} (95 % CI {low:.2%} to {high:.2%}); "
        f"testing every look at {alpha:.0%}: {naive.mean():.2%}; "
        f"{time.perf_counter() - started:.1f} s"
    )
    assert rate <= alpha and high < alpha
    assert naive.mean() > 2 * alpha


def test_a_better_model_is_promoted_with_high_probability_within_the_maximum_duration():
    """A shadow that earns 0.1 standard deviations of the per-bar difference more per bar is
    promoted in at least 95 % of 2,000 periods by the last look (3,000 bars).

    With these series that is 1.9 bp per bar, a per-bar Sharpe lead of 0.063: annualized 1.2 on
    daily bars (3,000 bars are 8 years), 5.9 on 1h bars (4 months). Smaller leads need longer
    shadow periods or models whose returns move more closely together (at correlation 0.95 the
    same power comes with half the Sharpe lead)."""
    design, _ = _policy_design()
    rng = np.random.default_rng(7)
    promoted, _, when = _promoted(shadow_periods(rng, 2_000, design.looks[-1], margin=0.1), design)
    power = promoted.mean()
    low, high = clopper_pearson(int(promoted.sum()), len(promoted))
    print(
        f"\npower at margin 0.1: {power:.2%} (95 % CI {low:.2%} to {high:.2%}); median bars to "
        f"promotion {np.median(when[promoted]):.0f} of {design.looks[-1]}"
    )
    assert power >= 0.95


def test_the_calibration_series_are_what_they_claim():
    rng = np.random.default_rng(8)
    d = shadow_periods(rng, 200, 3_000)
    lag1 = np.mean([np.corrcoef(row[1:], row[:-1])[0, 1] for row in d])
    assert lag1 == pytest.approx(PHI, abs=0.03)  # autocorrelated
    assert stats.kurtosis(d.ravel()) > 2.0  # fat-tailed
    sd = SIGMA * math.sqrt(2 * (1 - CORRELATION))
    assert d.std() == pytest.approx(sd, rel=0.05)
