"""NSGA-II glue: pymoo's ask/tell interface over genomes whose fitness the database holds (pure).

Why pymoo (and not optuna's NSGAIISampler):
- pymoo's NSGA-II asks for a whole generation at once and is told the whole generation back,
  exactly the unit the Celery chord gathers; optuna's sampler picks parents trial by trial for a
  stream of trials, and its constraints go through a callback over stored trial attributes.
- pymoo's random state is one numpy Generator per algorithm. Replaying the stored generations
  through ask/tell therefore rebuilds the algorithm exactly as it was, so after a crash the
  database is the only record needed: no pickled sampler, no second store of every trial (optuna
  would need its own RDB storage beside our tables).
- Everything the search needs is the library's, not hand-written: Latin hypercube sampling, binary
  tournament, SBX crossover, polynomial mutation, rank-and-crowding survival, non-dominated sorting,
  crowding distance and the hypervolume indicator, with constraints as G <= 0.

Objectives (pymoo minimizes): F = (-Sharpe, -profit factor, max drawdown); constraint
G = min_trades - trades <= 0. A failed candidate gets the worst objectives and a violation larger
than any real one, so it ranks below every evaluated candidate and never becomes a parent while a
better one exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.evaluator import Evaluator
from pymoo.core.individual import Individual
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.termination import NoTermination
from pymoo.indicators.hv import HV
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.sampling.lhs import LHS
from pymoo.operators.survival.rank_and_crowding import RankAndCrowding
from pymoo.problems.static import StaticProblem
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from evolution.search_space import SearchSpace

OBJECTIVES = ("sharpe", "profit_factor", "max_drawdown")
# An infinite profit factor (no losing trade) counts as this, so it cannot dominate everything.
PROFIT_FACTOR_CAP = 10.0
SHARPE_CAP = 100.0
# Hypervolume is measured against Sharpe 0, profit factor 1 and a 100 % drawdown: only strategies
# better than break-even on all three add volume.
REFERENCE_POINT = np.array([0.0, -1.0, 1.0])
FAILED_F = (SHARPE_CAP, 0.0, 1.0)
FAILED_VIOLATION = 1e9

SBX_ETA, SBX_PROB = 15.0, 0.9
PM_ETA = 20.0


@dataclass(frozen=True)
class Scored:
    """A genome the algorithm has seen, with its objective and constraint values (minimized)."""

    key: str
    genome: tuple[float, ...]
    F: tuple[float, float, float]
    G: tuple[float]


@dataclass(frozen=True)
class Child:
    """A genome the algorithm proposes, with where it came from."""

    genome: tuple[float, ...]
    origin: str  # "random" (initial sampling), "crossover" or "mutation"
    parents: tuple[str, ...]


@dataclass(frozen=True)
class Standing:
    """A member of the population after survival: its non-dominated rank and crowding distance.

    `rank` is None for infeasible members, which survive (if at all) by constraint violation.
    """

    key: str
    rank: int | None
    crowding: float | None


def objectives(metrics: Mapping[str, Any] | None, *, min_trades: int) -> tuple[tuple, tuple]:
    """(F, G) of a candidate's backtest metrics; None metrics mean it failed."""
    if metrics is None:
        return FAILED_F, (float(min_trades) + FAILED_VIOLATION,)
    sharpe = _finite(metrics.get("sharpe"), 0.0)
    if metrics.get("profit_factor_infinite"):
        profit_factor = PROFIT_FACTOR_CAP
    else:
        profit_factor = _finite(metrics.get("profit_factor"), 0.0)
    drawdown = _finite(metrics.get("max_drawdown"), 1.0)
    F = (
        -min(max(sharpe, -SHARPE_CAP), SHARPE_CAP),
        -min(max(profit_factor, 0.0), PROFIT_FACTOR_CAP),
        min(max(drawdown, 0.0), 1.0),
    )
    return F, (float(min_trades) - float(metrics.get("trades") or 0),)


def _finite(value: Any, default: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default


# ---------------------------------------------------------------------------------------------
# The algorithm


class _LineageSBX(SBX):
    """SBX that tags each offspring with its parents' keys and its genome before mutation.

    pymoo's mating selects parents, crosses them, then mutates; the offspring of mating m are at
    positions m, m + n_matings, ... of the crossover's output. The tags let `propose` record the
    lineage and tell a crossover from a parent copied and only mutated.
    """

    def do(self, problem, pop, parents=None, **kwargs):
        off = super().do(problem, pop, parents, **kwargs)
        matings = [pop[m] for m in parents] if parents is not None else pop
        for i, child in enumerate(off):
            mating = matings[i % len(matings)]
            child.set("parent_keys", tuple(parent.get("key") for parent in mating))
            child.set("parent_genomes", tuple(tuple(parent.X) for parent in mating))
            child.set("crossed", tuple(child.X))
        return off


class _SameParams(DuplicateElimination):
    """Genomes that decode to the same parameters are duplicates: they train the same model."""

    def __init__(self, key: Callable[[np.ndarray], tuple]) -> None:
        super().__init__()
        self.key = key

    def _do(self, pop, other, is_duplicate):
        seen = {self._key(ind) for ind in other} if other is not None else set()
        for i, ind in enumerate(pop):
            k = self._key(ind)
            if k in seen:
                is_duplicate[i] = True
            else:
                seen.add(k)
        return is_duplicate

    def _key(self, individual: Individual) -> tuple:
        """The decoded key, kept on the individual (population members are compared often)."""
        cached = individual.get("params_key")
        if cached is None or cached[0] is not individual.X:
            cached = (individual.X, self.key(individual.X))
            individual.set("params_key", cached)
        return cached[1]


def problem_of(space: SearchSpace) -> Problem:
    return Problem(n_var=len(space.genes), n_obj=3, n_ieq_constr=1, xl=space.xl, xu=space.xu)


def _algorithm(space: SearchSpace, pop_size: int, seed: int) -> tuple[NSGA2, Problem]:
    problem = problem_of(space)
    algorithm = NSGA2(
        pop_size=pop_size,
        sampling=LHS(),
        crossover=_LineageSBX(eta=SBX_ETA, prob=SBX_PROB),
        mutation=PM(eta=PM_ETA),
        survival=RankAndCrowding(),
        eliminate_duplicates=_SameParams(space.key),
    )
    algorithm.setup(problem, termination=NoTermination(), seed=seed, verbose=False)
    return algorithm, problem


def _population(problem: Problem, members: Sequence[Scored]) -> Population:
    pop = Population.new("X", np.array([m.genome for m in members], dtype=float))
    for individual, member in zip(pop, members, strict=True):
        individual.set("key", member.key)
    F = np.array([m.F for m in members], dtype=float)
    G = np.array([m.G for m in members], dtype=float)
    Evaluator().eval(StaticProblem(problem, F=F, G=G), pop)
    return pop


def replay(
    space: SearchSpace, *, pop_size: int, seed: int, history: Sequence[Sequence[Scored]]
) -> tuple[NSGA2, Problem]:
    """The algorithm after being told every stored generation, in order.

    Each generation is asked for again (so the random state advances exactly as it did the first
    time), then the stored genomes, which ask() reproduces, are told with their stored scores.
    """
    algorithm, problem = _algorithm(space, pop_size, seed)
    for members in history:
        algorithm.ask()
        algorithm.tell(infills=_population(problem, members))
    return algorithm, problem


def step(
    space: SearchSpace,
    *,
    pop_size: int,
    seed: int,
    history: Sequence[Sequence[Scored]],
    propose_next: bool,
) -> tuple[list[Standing], list[Child]]:
    """Tell the stored generations; return the surviving population's standings and, if asked,
    the next generation's genomes."""
    algorithm, _ = replay(space, pop_size=pop_size, seed=seed, history=history)
    standings = (
        [_standing(individual) for individual in algorithm.pop] if algorithm.pop is not None else []
    )
    children = _children(algorithm.ask()) if propose_next else []
    return standings, children


def _standing(individual: Individual) -> Standing:
    rank = individual.get("rank")
    crowding = individual.get("crowding")
    feasible = bool(individual.feas)
    return Standing(
        key=individual.get("key"),
        rank=int(rank) if rank is not None and feasible else None,
        crowding=float(crowding) if crowding is not None and feasible else None,
    )


def _children(offspring: Population | None) -> list[Child]:
    """Offspring with their lineage; pymoo answers None when no new parameter set is left."""
    children = []
    for child in offspring if offspring is not None else []:
        genome = tuple(float(v) for v in child.X)
        keys = child.get("parent_keys")
        if keys is None:
            children.append(Child(genome=genome, origin="random", parents=()))
            continue
        crossed = child.get("crossed")
        copied = [k for k, g in zip(keys, child.get("parent_genomes"), strict=True) if g == crossed]
        if copied:
            children.append(Child(genome=genome, origin="mutation", parents=(copied[0],)))
        else:
            children.append(Child(genome=genome, origin="crossover", parents=_unique(keys)))
    return children


def _unique(keys: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(keys))


# ---------------------------------------------------------------------------------------------
# Ranking, fronts and hypervolume


def rank_and_crowding(scored: Sequence[Scored], n: int | None = None) -> list[Standing]:
    """The best `n` of `scored` in NSGA-II's order: feasible before infeasible, then by
    non-dominated rank, then by crowding distance (larger first), as the library's survival ranks
    them."""
    if not scored:
        return []
    space_dim = len(scored[0].genome)
    problem = Problem(n_var=space_dim, n_obj=3, n_ieq_constr=1, xl=0.0, xu=1.0)
    pop = _population(problem, scored)
    survivors = RankAndCrowding().do(
        problem, pop, n_survive=len(pop) if n is None else n, random_state=np.random.default_rng(0)
    )
    standings = [_standing(individual) for individual in survivors]
    feasible = [s for s in standings if s.rank is not None]
    feasible.sort(key=lambda s: (s.rank, -(s.crowding if s.crowding is not None else 0.0)))
    return feasible + [s for s in standings if s.rank is None]


def pareto_front(scored: Sequence[Scored]) -> list[Scored]:
    """The feasible members no other feasible member dominates."""
    feasible = [s for s in scored if s.G[0] <= 0]
    if not feasible:
        return []
    F = np.array([s.F for s in feasible], dtype=float)
    front = NonDominatedSorting().do(F, only_non_dominated_front=True)
    return [feasible[i] for i in sorted(front)]


def hypervolume(front: Sequence[Scored]) -> float:
    """Volume of objective space the front dominates, bounded by REFERENCE_POINT."""
    F = np.array([s.F for s in front if np.all(np.asarray(s.F) < REFERENCE_POINT)], dtype=float)
    if len(F) == 0:
        return 0.0
    return float(HV(ref_point=REFERENCE_POINT)(F))


def crowded_score(standing: Standing) -> float | None:
    """One number that sorts like NSGA-II's crowded comparison: rank first, crowding second.

    -rank + crowding / (1 + crowding), in (-rank, -rank + 1]; an infinite crowding distance (a
    front's extreme point) scores -rank + 1. None for infeasible or failed candidates.
    """
    if standing.rank is None:
        return None
    crowding = standing.crowding if standing.crowding is not None else 0.0
    share = 1.0 if math.isinf(crowding) else crowding / (1.0 + crowding)
    return -float(standing.rank) + share


# ---------------------------------------------------------------------------------------------
# Single operators, for candidates proposed outside a run


def mutate(
    space: SearchSpace, genome: Sequence[float], *, seed: int, eta: float = 5.0
) -> tuple[float, ...]:
    """Polynomial mutation of one genome that changes at least one parameter.

    A lower `eta` than inside a run (5 against 20) and a fifth of the genes mutated take bigger
    steps: a standalone mutation is asked for when the parent performs poorly, so it should not
    stay next to it.
    """
    problem = problem_of(space)
    rng = np.random.default_rng(seed)
    parent_key = space.key(np.asarray(genome))
    mutation = PM(prob=1.0, prob_var=0.2, eta=eta, at_least_once=True)
    x = np.asarray(genome, dtype=float)
    for _ in range(20):  # a small move can round back to the same integers; try again
        pop = mutation.do(problem, Population.new("X", x[None, :]), random_state=rng)
        child = pop[0].X
        if space.key(child) != parent_key:
            return tuple(float(v) for v in child)
    return tuple(float(v) for v in child)


def crossover(
    space: SearchSpace, first: Sequence[float], second: Sequence[float], *, seed: int
) -> tuple[float, ...]:
    """SBX of two genomes followed by polynomial mutation; the first child is returned."""
    problem = problem_of(space)
    rng = np.random.default_rng(seed)
    parents = [[Individual(X=np.asarray(first, float)), Individual(X=np.asarray(second, float))]]
    off = SBX(eta=SBX_ETA, prob=1.0).do(problem, parents, random_state=rng)
    off = PM(eta=PM_ETA).do(problem, off[:1], random_state=rng)
    return tuple(float(v) for v in off[0].X)
