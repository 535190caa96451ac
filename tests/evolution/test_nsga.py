"""The NSGA-II glue: objectives, replay after a crash, ranking, fronts and hypervolume."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evolution import nsga
from evolution.search_space import resolve_search_space

SPACE = resolve_search_space("xgboost", {"n_estimators": {"low": 10, "high": 50}})


def _score(key: str, sharpe: float, pf: float, dd: float, trades: int = 100, min_trades=50):
    F, G = nsga.objectives(
        {"sharpe": sharpe, "profit_factor": pf, "max_drawdown": dd, "trades": trades},
        min_trades=min_trades,
    )
    return nsga.Scored(key=key, genome=(0.0,), F=F, G=G)


def test_objectives_are_minimized_with_trades_as_constraint():
    F, G = nsga.objectives(
        {"sharpe": 1.5, "profit_factor": 1.4, "max_drawdown": 0.1, "trades": 40}, min_trades=50
    )
    assert F == (-1.5, -1.4, 0.1) and G == (10.0,)
    F, _ = nsga.objectives(
        {"sharpe": 2.0, "profit_factor": None, "profit_factor_infinite": True,
         "max_drawdown": 0.0, "trades": 3},
        min_trades=0,
    )  # fmt: skip
    assert F[1] == -nsga.PROFIT_FACTOR_CAP
    F, G = nsga.objectives(None, min_trades=50)
    assert F == nsga.FAILED_F and G[0] > 1e6


def _fake_history(seed: int, generations: int) -> list[list[nsga.Scored]]:
    """Generations as the algorithm proposes them, scored with random metrics."""
    rng = np.random.default_rng(seed)
    history: list[list[nsga.Scored]] = []
    for g in range(generations):
        _, children = nsga.step(SPACE, pop_size=8, seed=seed, history=history, propose_next=True)
        members = []
        for i, child in enumerate(children):
            metrics = {
                "sharpe": rng.normal(1, 1), "profit_factor": rng.uniform(0.5, 3),
                "max_drawdown": rng.uniform(0, 0.4), "trades": int(rng.integers(20, 99)),
            }  # fmt: skip
            F, G = nsga.objectives(metrics, min_trades=50)
            members.append(nsga.Scored(f"{g}-{i}", child.genome, F, G))
        history.append(members)
    return history


def test_replay_proposes_exactly_what_the_uninterrupted_run_would():
    """The state after a crash is rebuilt from stored generations: same seed, same next children."""
    history = _fake_history(seed=5, generations=3)
    _, first = nsga.step(SPACE, pop_size=8, seed=5, history=history, propose_next=True)
    _, again = nsga.step(SPACE, pop_size=8, seed=5, history=history, propose_next=True)
    assert first == again
    _, other = nsga.step(SPACE, pop_size=8, seed=6, history=history, propose_next=True)
    assert first != other


def test_children_record_their_parents_from_the_population():
    history = _fake_history(seed=2, generations=2)
    standings, children = nsga.step(SPACE, pop_size=8, seed=2, history=history, propose_next=True)
    population = {s.key for s in standings}
    assert len(children) == 8 and len(standings) == 8
    first = nsga.step(SPACE, pop_size=8, seed=2, history=[], propose_next=True)[1]
    assert {c.origin for c in first} == {"random"} and all(not c.parents for c in first)
    for child in children:
        assert child.origin in ("crossover", "mutation")
        assert set(child.parents) <= population
        if child.origin == "mutation":
            assert len(child.parents) == 1
    keys = [SPACE.key(c.genome) for c in children]
    assert len(set(keys)) == len(keys), "duplicate parameter sets"


def test_rank_and_crowding_orders_feasible_fronts_then_infeasible():
    scored = [
        _score("best-sharpe", 3.0, 2.0, 0.2),
        _score("best-drawdown", 1.0, 2.0, 0.05),
        _score("dominated", 0.9, 1.9, 0.25),
        _score("middle", 2.0, 2.0, 0.1),
        _score("few-trades", 5.0, 5.0, 0.01, trades=10),
    ]
    ordered = [s.key for s in nsga.rank_and_crowding(scored)]
    assert ordered[-1] == "few-trades"
    assert ordered[-2] == "dominated"
    assert set(ordered[:3]) == {"best-sharpe", "best-drawdown", "middle"}
    assert ordered[2] == "middle"  # interior point of the front: smallest crowding distance
    top = nsga.rank_and_crowding(scored, n=2)
    assert {s.key for s in top} == {"best-sharpe", "best-drawdown"}
    assert all(s.rank == 0 and math.isinf(s.crowding) for s in top)


def test_pareto_front_and_hypervolume_by_hand():
    a = _score("a", 2.0, 3.0, 0.5)  # F = (-2, -3, 0.5)
    b = _score("b", 1.0, 2.0, 0.2)  # F = (-1, -2, 0.2)
    c = _score("c", 0.5, 1.5, 0.6)  # dominated by a
    d = _score("d", 9.0, 9.0, 0.0, trades=1)  # infeasible: not on the front
    front = nsga.pareto_front([a, b, c, d])
    assert [s.key for s in front] == ["a", "b"]
    # Against (0, -1, 1): a's box 2 x 2 x 0.5 = 2, b's 1 x 1 x 0.8 = 0.8, overlap 1 x 1 x 0.5.
    assert nsga.hypervolume(front) == pytest.approx(2.0 + 0.8 - 0.5)
    assert nsga.hypervolume([_score("flat", -1.0, 0.5, 0.3)]) == 0.0
    assert nsga.hypervolume([]) == 0.0


def test_crowded_score_sorts_like_the_crowded_comparison():
    s = nsga.crowded_score
    assert s(nsga.Standing("x", 0, math.inf)) == 1.0
    assert s(nsga.Standing("x", 0, 1.0)) == 0.5
    assert s(nsga.Standing("x", 1, math.inf)) == 0.0 > s(nsga.Standing("x", 0, 0.0)) - 1
    assert s(nsga.Standing("x", None, None)) is None
