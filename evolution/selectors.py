"""Reads of candidates and evolution runs: views, admin, tasks and the pipeline read here."""

from __future__ import annotations

import contextlib
import math
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError
from django.db.models import Count, F, Prefetch, QuerySet

from clm_project.exceptions import NotFound
from evolution import nsga
from evolution.fitness import SEEN_UNTIL, unpack_returns
from evolution.models import (
    CandidateOrigin,
    CandidateStatus,
    EvaluationStatus,
    EvolutionRun,
    Generation,
    RunStatus,
    StrategyCandidate,
)
from registry.models import RegisteredModel
from registry.selectors import trial_sharpes
from training.evaluation.backtest import PERIODS_PER_YEAR, deflated_sharpe

MAX_LINEAGE_DEPTH = 10


def _candidates() -> QuerySet[StrategyCandidate]:
    """Candidates with what a listing shows, without the stored return series."""
    return StrategyCandidate.objects.select_related("generation", "run").defer("oos_returns")


def candidate_get(*, candidate_id: Any) -> StrategyCandidate:
    try:
        return (
            _candidates()
            .select_related("training_job__model", "produced_version__model")
            .get(pk=candidate_id)
        )
    except (StrategyCandidate.DoesNotExist, ValueError, ValidationError):
        raise NotFound(f"unknown candidate {candidate_id}") from None


def candidate_list(
    *,
    status: str | None = None,
    origin: str | None = None,
    model_type: str | None = None,
    symbol: str | None = None,
    timeframe: str | None = None,
    run: Any = None,
    generation: int | None = None,
    evaluation_status: str | None = None,
    ordering: str = "-created_at",
) -> QuerySet[StrategyCandidate]:
    qs = _candidates()
    if status:
        qs = qs.filter(status=status)
    if origin:
        qs = qs.filter(origin=origin)
    if model_type:
        qs = qs.filter(model_type=model_type)
    if symbol:
        qs = qs.filter(symbol=symbol.upper())
    if timeframe:
        qs = qs.filter(timeframe=timeframe)
    if run:
        qs = qs.filter(run_id=run)
    if generation is not None:
        qs = qs.filter(generation__number=generation)
    if evaluation_status:
        qs = qs.filter(evaluation_status=evaluation_status)
    return qs.order_by(CANDIDATE_ORDERINGS[ordering], "index", "pk")


CANDIDATE_ORDERINGS = {
    "created_at": "created_at",
    "-created_at": "-created_at",
    "fitness": "fitness",
    "-fitness": "-fitness",
    "generation": "generation__number",
    "-generation": "-generation__number",
}


@dataclass(frozen=True)
class Lineage:
    """Ancestors up to `depth` generations back (each with its parents' ids) and direct children."""

    ancestors: list[tuple[StrategyCandidate, int, list[str]]]
    children: list[StrategyCandidate]


def candidate_lineage(*, candidate: StrategyCandidate, depth: int = 5) -> Lineage:
    """Walk parent links breadth-first, one query per level; shared ancestors appear once."""
    depth = min(max(depth, 0), MAX_LINEAGE_DEPTH)
    through = StrategyCandidate.parents.through
    seen: set[Any] = {candidate.pk}
    ancestors: list[tuple[StrategyCandidate, int, list[str]]] = []
    frontier = [candidate.pk]
    for level in range(1, depth + 1):
        links = list(
            through.objects.filter(from_strategycandidate_id__in=frontier).values_list(
                "from_strategycandidate_id", "to_strategycandidate_id"
            )
        )
        new_ids = [parent for _, parent in links if parent not in seen]
        if not new_ids:
            break
        seen.update(new_ids)
        rows = {c.pk: c for c in _candidates().filter(pk__in=new_ids)}
        parent_links = _parent_ids(list(rows))
        for pk in dict.fromkeys(new_ids):
            ancestors.append((rows[pk], level, parent_links.get(pk, [])))
        frontier = list(rows)
    children = list(_candidates().filter(parents=candidate).order_by("created_at", "index"))
    return Lineage(ancestors=ancestors, children=children)


def _parent_ids(candidate_ids: list[Any]) -> dict[Any, list[str]]:
    through = StrategyCandidate.parents.through
    out: dict[Any, list[str]] = {}
    for child, parent in through.objects.filter(
        from_strategycandidate_id__in=candidate_ids
    ).values_list("from_strategycandidate_id", "to_strategycandidate_id"):
        out.setdefault(child, []).append(str(parent))
    return out


def candidate_parent_ids(*, candidate: StrategyCandidate) -> list[str]:
    return _parent_ids([candidate.pk]).get(candidate.pk, [])


def search_seen_until(*, candidate: StrategyCandidate) -> str | None:
    """The last bar (ISO time) that the search which produced `candidate` read: the latest
    `seen_until` of every evaluated candidate of its run, or, for a candidate outside a run, of
    itself and its ancestors (up to MAX_LINEAGE_DEPTH generations). The training job for the
    candidate is tested on bars after it. None when no fitness recorded one."""
    if candidate.run_id:
        searched = StrategyCandidate.objects.filter(
            run_id=candidate.run_id, evaluation_status=EvaluationStatus.EVALUATED
        )
    else:
        ids: set[str] = {str(candidate.pk)}
        frontier: list[Any] = [candidate.pk]
        for _ in range(MAX_LINEAGE_DEPTH):
            parents = {p for ps in _parent_ids(frontier).values() for p in ps} - ids
            if not parents:
                break
            ids |= parents
            frontier = list(parents)
        searched = StrategyCandidate.objects.filter(pk__in=ids)
    seen = [
        value
        for value in searched.values_list(f"training_metrics__{SEEN_UNTIL}", flat=True)
        if value
    ]
    return max(seen, key=datetime.fromisoformat) if seen else None


def scored(candidate: StrategyCandidate, *, min_trades: int) -> nsga.Scored:
    """The candidate as the NSGA-II glue sees it (failed: worst objectives, infeasible)."""
    metrics = (
        candidate.metrics if candidate.evaluation_status == EvaluationStatus.EVALUATED else None
    )
    F, G = nsga.objectives(metrics, min_trades=min_trades)
    return nsga.Scored(key=str(candidate.pk), genome=tuple(candidate.genome), F=F, G=G)


def select_top_candidates(
    *, n: int, min_trades: int = 0, **filters: Any
) -> list[tuple[StrategyCandidate, nsga.Standing]]:
    """The best `n` evaluated candidates (optionally filtered as `candidate_list`) in NSGA-II's
    order: feasible (at least `min_trades` trades) first, then non-dominated rank, then crowding
    distance, as computed by the library."""
    pool = list(candidate_list(**filters, evaluation_status=EvaluationStatus.EVALUATED))
    if not pool:
        return []
    by_key = {str(c.pk): c for c in pool}
    # Genomes of different spaces may differ in length; rank on objectives only.
    points = [
        nsga.Scored(key=s.key, genome=(0.0,), F=s.F, G=s.G)
        for s in (scored(c, min_trades=min_trades) for c in pool)
    ]
    return [(by_key[s.key], s) for s in nsga.rank_and_crowding(points, n)]


def candidate_trial_sharpes(*, symbol: str, timeframe: str, exclude: Any = None) -> list[float]:
    """Per-bar Sharpe ratios of every candidate evaluated on this symbol and timeframe: the
    trials a deflated Sharpe ratio on that data must count."""
    qs = StrategyCandidate.objects.filter(
        symbol=symbol.upper(), timeframe=timeframe, evaluation_status=EvaluationStatus.EVALUATED
    )
    if exclude:
        # A job's trigger_context is free-form: a malformed id excludes nothing.
        with contextlib.suppress(ValueError):
            qs = qs.exclude(pk=uuid.UUID(str(exclude)))
    periods = PERIODS_PER_YEAR.get(timeframe, 1)
    sharpes = []
    for metrics in qs.values_list("metrics", flat=True):
        value = (metrics or {}).get("sharpe")
        if value is not None and math.isfinite(value):
            sharpes.append(value / math.sqrt(periods))
    return sharpes


def candidate_returns(*, candidate: StrategyCandidate) -> np.ndarray:
    blob = StrategyCandidate.objects.filter(pk=candidate.pk).values_list("oos_returns", flat=True)
    return unpack_returns(blob.first())


def trial_sharpes_on(*, model_type: str, symbol: str, timeframe: str) -> list[float]:
    """Per-bar Sharpe ratios of every trial on this data: the registry's evaluations of the model
    line and every candidate evaluated on the symbol and timeframe (as the pipeline counts)."""
    return trial_sharpes(
        model_id=RegisteredModel.make_model_id(model_type, symbol, timeframe),
        symbol=symbol,
        timeframe=timeframe,
    )


def candidate_deflated_sharpe(*, candidate: StrategyCandidate) -> tuple[float | None, int]:
    """(DSR, K): the candidate's out-of-sample returns deflated by K = every trial on its data
    (itself included). None when it has no stored returns (not evaluated here). The one DSR a
    candidate has: the API, the admin and the selection gate all read it from here."""
    return candidates_deflated_sharpe([candidate])[candidate.pk]


def candidates_deflated_sharpe(
    candidates: Iterable[StrategyCandidate],
) -> dict[Any, tuple[float | None, int]]:
    """`candidate_deflated_sharpe` of many (a list page): the trials of each data set are read
    once, the stored returns in one query."""
    candidates = list(candidates)
    evaluated = [c.pk for c in candidates if c.evaluation_status == EvaluationStatus.EVALUATED]
    blobs = dict(
        StrategyCandidate.objects.filter(pk__in=evaluated).values_list("pk", "oos_returns")
    )
    trials_of: dict[tuple[str, str, str], tuple[int, float]] = {}
    result: dict[Any, tuple[float | None, int]] = {}
    for candidate in candidates:
        returns = unpack_returns(blobs.get(candidate.pk))
        if len(returns) < 2:
            result[candidate.pk] = (None, 0)
            continue
        key = (candidate.model_type, candidate.symbol, candidate.timeframe)
        if key not in trials_of:
            trials = trial_sharpes_on(model_type=key[0], symbol=key[1], timeframe=key[2])
            variance = float(np.var(trials, ddof=1)) if len(trials) > 1 else 0.0
            trials_of[key] = (max(len(trials), 1), variance)
        n_trials, variance = trials_of[key]
        dsr = deflated_sharpe(returns, n_trials=n_trials, trial_sharpe_variance=variance)
        result[candidate.pk] = (dsr, n_trials)
    return result


# ---------------------------------------------------------------------------------------------
# Runs and generations


def run_get(*, run_id: Any) -> EvolutionRun:
    try:
        return EvolutionRun.objects.prefetch_related(
            Prefetch("generation_set", queryset=Generation.objects.order_by("number"))
        ).get(pk=run_id)
    except (EvolutionRun.DoesNotExist, ValueError, ValidationError):
        raise NotFound(f"unknown evolution run {run_id}") from None


def run_list(
    *, status: str | None = None, model_type: str | None = None, symbol: str | None = None
) -> QuerySet[EvolutionRun]:
    qs = EvolutionRun.objects.annotate(n_candidates=Count("candidates"))
    if status:
        qs = qs.filter(status=status)
    if model_type:
        qs = qs.filter(model_type=model_type)
    if symbol:
        qs = qs.filter(symbol=symbol.upper())
    return qs.order_by("-created_at")


def generation_get(*, run_id: Any, number: int) -> Generation:
    try:
        return Generation.objects.select_related("run").get(run_id=run_id, number=number)
    except (Generation.DoesNotExist, ValueError, ValidationError):
        run_get(run_id=run_id)
        raise NotFound(f"evolution run {run_id} has no generation {number}") from None


def generation_points(*, generation: Generation) -> list[dict[str, Any]]:
    """The objectives (Sharpe, drawdown, profit factor) and feasibility of each evaluated
    candidate of a generation."""
    rows = generation.candidates.filter(evaluation_status=EvaluationStatus.EVALUATED).values_list(
        "pk", "metrics", "feasible"
    )
    return [
        {
            "id": str(pk),
            "sharpe": (metrics or {}).get("sharpe"),
            "max_drawdown": (metrics or {}).get("max_drawdown"),
            "profit_factor": (metrics or {}).get("profit_factor"),
            "profit_factor_infinite": bool((metrics or {}).get("profit_factor_infinite")),
            "feasible": bool(feasible),
        }
        for pk, metrics, feasible in rows
    ]


def run_history(*, run: EvolutionRun, through: int) -> list[list[nsga.Scored]]:
    """Generations 1..`through` of a run, each in proposal order, as the algorithm was told them."""
    rows = (
        StrategyCandidate.objects.filter(run=run, generation__number__lte=through)
        .order_by("generation__number", "index")
        .values_list("pk", "genome", "metrics", "evaluation_status", "generation__number")
    )
    history: list[list[nsga.Scored]] = [[] for _ in range(through)]
    for pk, genome, metrics, state, number in rows:
        F, G = nsga.objectives(
            metrics if state == EvaluationStatus.EVALUATED else None, min_trades=run.min_trades
        )
        history[number - 1].append(nsga.Scored(key=str(pk), genome=tuple(genome), F=F, G=G))
    return history


def evolution_stats() -> dict[str, Any]:
    """Counts for the original design's get_stats(): candidates by status, origin and evaluation
    state, runs by status, and the best evaluated Sharpe ratio."""
    by = {
        field: Counter(dict(StrategyCandidate.objects.values_list(field).annotate(n=Count("pk"))))
        for field in ("status", "origin", "evaluation_status")
    }
    runs = Counter(dict(EvolutionRun.objects.values_list("status").annotate(n=Count("pk"))))
    best = (
        StrategyCandidate.objects.filter(evaluation_status=EvaluationStatus.EVALUATED)
        .exclude(metrics__sharpe=None)
        .order_by(F("metrics__sharpe").desc())
        .values_list("metrics__sharpe", flat=True)
        .first()
    )
    return {
        "candidates": sum(by["status"].values()),
        "by_status": {s: by["status"].get(s, 0) for s in CandidateStatus.values},
        "by_origin": {o: by["origin"].get(o, 0) for o in CandidateOrigin.values},
        "by_evaluation_status": {
            e: by["evaluation_status"].get(e, 0) for e in EvaluationStatus.values
        },
        "runs": {s: runs.get(s, 0) for s in RunStatus.values},
        "best_sharpe": best,
    }
