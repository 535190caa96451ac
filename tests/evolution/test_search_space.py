"""Search spaces: validation of overrides, decoding, and operators that never leave the bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evolution import nsga
from evolution.search_space import (
    DEFAULT_SPACES,
    STRATEGY_LIMITS,
    Gene,
    Kind,
    SearchSpace,
    SearchSpaceError,
    check_space_trains,
    resolve_search_space,
)
from training.data.features import validate_feature_spec
from training.trainers import trainer_class


def _error(model_type: str, overrides: dict) -> SearchSpaceError:
    with pytest.raises(SearchSpaceError) as caught:
        resolve_search_space(model_type, overrides)
    return caught.value


# ---------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"depth": 3}, "search_space.depth", "unknown parameter 'depth'"),
        ({"max_depth": {"low": 6, "high": 3}}, "search_space.max_depth", "low 6 is above high 3"),
        ({"max_depth": {"low": 0, "high": 3}}, "search_space.max_depth.low", "must be >= 1"),
        ({"max_depth": {"low": 2, "high": 99}}, "search_space.max_depth.high", "must be <= 16"),
        ({"max_depth": {"low": 2.5, "high": 4}}, "search_space.max_depth.low", "an integer"),
        ({"learning_rate": {"low": 0.0, "high": 0.1}}, "search_space.learning_rate.low",
         "must be >= 0.0001"),
        ({"no_trade_band": {"kind": "log_float", "low": 0.0, "high": 0.1}},
         "search_space.no_trade_band", "needs low > 0"),
        ({"calibration": {"choices": ["none", "magic"]}}, "search_space.calibration",
         "must be one of"),
        ({"calibration": {"choices": []}}, "search_space.calibration", "non-empty list"),
        ({"calibration": {"low": 1, "high": 2}}, "search_space.calibration", "give choices"),
        ({"calibration": {"kind": "int"}}, "search_space.calibration", "only be categorical"),
        ({"max_depth": {"kind": "float", "low": 2, "high": 4}}, "search_space.max_depth",
         "use kind int"),
        ({"max_depth": {"kind": "cubic"}}, "search_space.max_depth", "kind of max_depth"),
        ({"max_depth": {"step": 2}}, "search_space.max_depth", "unknown keys ['step']"),
        ({"horizon": 0}, "search_space.horizon", "must be >= 1"),
        ({"ma_fast": {"low": 5, "high": 80}}, "search_space.ma_fast", "below ma_slow"),
        ({"n_jobs": "two"}, "search_space.n_jobs", "must be an integer"),
        ({"subsample": float("nan")}, "search_space.subsample", "finite"),
    ],
)  # fmt: skip
def test_bad_overrides_are_refused_with_the_field(overrides, field, words):
    error = _error("xgboost", overrides)
    assert error.field == field
    assert words in error.message


def test_unsupported_model_type_and_non_object_overrides():
    assert _error("nhits", {}).field == "model_type"
    assert _error("xgboost", ["max_depth"]).field == "search_space"


def test_everything_fixed_leaves_nothing_to_search():
    fixed = {gene.name: 5 for gene in DEFAULT_SPACES["xgboost"] if gene.kind is Kind.INT}
    fixed.update(
        learning_rate=0.1, subsample=0.8, colsample_bytree=0.8, reg_lambda=1.0,
        calibration="none", no_trade_band=0.02, position_scale=0.2, min_child_weight=1.0,
        ma_fast=5, ma_slow=50,
    )  # fmt: skip
    assert _error("xgboost", fixed).field == "search_space"


def test_overrides_narrow_fix_and_add_genes():
    space = resolve_search_space(
        "lightgbm",
        {
            "n_estimators": {"low": 10, "high": 20},
            "horizon": 6,
            "calibration": {"choices": ["platt"]},
            "validation_fraction": {"low": 0.1, "high": 0.3},
            "max_depth": {"low": 3, "high": 3},
        },
    )
    genes = {g.name: g for g in space.genes}
    assert genes["n_estimators"] == Gene("n_estimators", Kind.INT, 10, 20)
    assert genes["validation_fraction"] == Gene("validation_fraction", Kind.FLOAT, 0.1, 0.3)
    assert {"horizon", "calibration", "max_depth"}.isdisjoint(genes)
    assert space.fixed == {"n_jobs": 1, "horizon": 6, "calibration": "platt", "max_depth": 3}
    params = space.decode((space.xl + space.xu) / 2)
    assert params["features"]["horizon"] == 6 and params["calibration"] == "platt"
    assert SearchSpace.from_dict(space.as_dict()) == space


def test_a_space_the_trainer_refuses_is_caught_before_a_run():
    space = resolve_search_space("xgboost", {"validation_fraction": 0.0})
    with pytest.raises(SearchSpaceError, match="validation_fraction > 0"):
        check_space_trains(space)


def test_encode_then_decode_keeps_the_values():
    space = resolve_search_space("xgboost")
    params = {
        "max_depth": 5, "learning_rate": 0.05, "calibration": "isotonic", "n_estimators": 120,
        "features": {"horizon": 8, "rsi_period": 21, "volatility_windows": [24, 96],
                     "ma_windows": [12, 60, 150]},
    }  # fmt: skip
    values = space.values(space.encode(params))
    assert values["max_depth"] == 5 and values["n_estimators"] == 120
    assert math.isclose(values["learning_rate"], 0.05, rel_tol=1e-5)
    assert values["calibration"] == "isotonic"
    assert (values["horizon"], values["rsi_period"], values["volatility_window"]) == (8, 21, 24)
    assert (values["ma_fast"], values["ma_slow"]) == (12, 150)


def test_decoding_over_a_parent_keeps_its_other_settings():
    space = resolve_search_space("xgboost")
    parent = {"reg_lambda": 3.0, "features": {"return_lags": [1, 3], "feature_names": ["x"]}}
    params = space.decode(space.xl, base=parent)
    assert params["features"]["return_lags"] == [1, 3]
    assert "feature_names" not in params["features"]
    assert params["reg_lambda"] == pytest.approx(0.1)  # the gene overrides the parent's value


# ---------------------------------------------------------------------------------------------
# Operators stay within bounds


def _assert_valid(space: SearchSpace, genome) -> None:
    genome = np.asarray(genome, dtype=float)
    assert np.all(genome >= space.xl) and np.all(genome <= space.xu), "genome left the box"
    values = space.values(genome)
    for gene in space.genes:
        value = values[gene.name]
        if gene.kind is Kind.CATEGORICAL:
            assert value in gene.choices
        else:
            assert gene.low <= value <= gene.high, (gene.name, value)
            assert isinstance(value, int) == (gene.kind is Kind.INT)
    params = space.decode(genome)
    features = params.pop("features")
    validate_feature_spec(features)
    trainer_class(space.model_type)(params)  # the trainer's own checks accept every value


@st.composite
def spaces(draw) -> SearchSpace:
    """A random valid narrowing of a default space."""
    model_type = draw(st.sampled_from(sorted(DEFAULT_SPACES)))
    overrides = {}
    for gene in DEFAULT_SPACES[model_type]:
        if gene.name in ("ma_fast", "ma_slow") or not draw(st.booleans()):
            continue
        if gene.kind is Kind.CATEGORICAL:
            chosen = draw(st.lists(st.sampled_from(gene.choices), min_size=1, unique=True))
            overrides[gene.name] = {"choices": chosen}
        elif gene.kind is Kind.INT:
            a, b = sorted(draw(st.integers(gene.low, gene.high)) for _ in range(2))
            overrides[gene.name] = {"low": a, "high": b}
        else:
            a, b = sorted(draw(st.floats(gene.low, gene.high)) for _ in range(2))
            if gene.kind is Kind.LOG_FLOAT or a == 0.0:
                a = max(a, gene.low)
            overrides[gene.name] = {"low": a, "high": max(a, b)}
    return resolve_search_space(model_type, overrides)


def _genome(space: SearchSpace, unit: list[float]) -> np.ndarray:
    genome = space.xl + np.asarray(unit[: len(space.genes)]) * (space.xu - space.xl)
    return np.clip(genome, space.xl, space.xu)  # xl + 1.0 * (xu - xl) may round past xu


UNIT = st.lists(st.floats(0.0, 1.0), min_size=32, max_size=32)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(space=spaces(), a=UNIT, b=UNIT, seed=st.integers(0, 2**32 - 1))
def test_mutation_and_crossover_stay_within_bounds(space, a, b, seed):
    first, second = _genome(space, a), _genome(space, b)
    _assert_valid(space, first)
    _assert_valid(space, nsga.mutate(space, first, seed=seed))
    _assert_valid(space, nsga.crossover(space, first, second, seed=seed))


@FAST
@given(space=spaces(), x=st.lists(st.floats(-1e9, 1e9), min_size=32, max_size=32))
def test_decoding_clamps_any_vector_into_the_bounds(space, x):
    values = space.values(x[: len(space.genes)])
    for gene in space.genes:
        if gene.kind is Kind.CATEGORICAL:
            assert values[gene.name] in gene.choices
        else:
            assert gene.low <= values[gene.name] <= gene.high


@settings(max_examples=8, deadline=None)
@given(space=spaces(), seed=st.integers(0, 2**16))
def test_nsga_generations_stay_within_bounds(space, seed):
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(3):
        _, children = nsga.step(space, pop_size=8, seed=seed, history=history, propose_next=True)
        members = []
        for i, child in enumerate(children):
            _assert_valid(space, child.genome)
            F, G = nsga.objectives(
                {"sharpe": rng.normal(), "profit_factor": rng.uniform(0, 3),
                 "max_drawdown": rng.uniform(0, 0.5), "trades": int(rng.integers(0, 100))},
                min_trades=20,
            )  # fmt: skip
            members.append(nsga.Scored(f"{len(history)}-{i}", child.genome, F, G))
        history.append(members)


def test_strategy_limits_cover_the_default_genes():
    for genes in DEFAULT_SPACES.values():
        for gene in genes:
            if gene.name in STRATEGY_LIMITS:
                low, high = STRATEGY_LIMITS[gene.name]
                assert low <= gene.low <= gene.high <= high
