"""Candidates outside runs: the original design's mutate, crossover and propose."""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from django.db import transaction

from clm_project.exceptions import InvalidInput
from evolution import nsga, selectors
from evolution.dispatch import enqueue_candidates
from evolution.models import (
    CandidateOrigin,
    CandidateStatus,
    StrategyCandidate,
)
from evolution.search_space import (
    SearchSpace,
    SearchSpaceError,
    resolve_search_space,
    supported_model_types,
)
from evolution.services.runs import describe_changes, run_space
from registry.models import (
    RegisteredModel,
)

logger = logging.getLogger(__name__)

# The original design's scheduler: a production Sharpe below this is "performing poorly".
POOR_SHARPE = 0.5

# ---------------------------------------------------------------------------------------------
# Candidates outside runs: the original design's mutate, crossover and propose operations


def _space_of(candidate: StrategyCandidate) -> SearchSpace:
    if candidate.run is not None:
        return run_space(candidate.run)
    try:
        return resolve_search_space(candidate.model_type)
    except SearchSpaceError as exc:
        raise InvalidInput(exc.message, field=exc.field) from exc


def _child_of(
    *,
    parents: Sequence[StrategyCandidate],
    genome: Sequence[float],
    space: SearchSpace,
    origin: str,
    description: str,
) -> StrategyCandidate:
    first = parents[0]
    child = StrategyCandidate.objects.create(
        base_strategy=first.base_strategy,
        model_type=first.model_type,
        symbol=first.symbol,
        timeframe=first.timeframe,
        params=space.decode(genome, base=first.params),
        genome=list(genome),
        origin=origin,
        mutation_description=description,
    )
    child.parents.set(parents)
    return child


def _genome_of(candidate: StrategyCandidate, space: SearchSpace) -> np.ndarray:
    """The stored genome when it is in `space` (its run's), else its params encoded afresh."""
    if candidate.run_id and candidate.genome and space == run_space(candidate.run):
        return np.asarray(candidate.genome, dtype=float)
    return space.encode(candidate.params)


def _seed(*parts: Any) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def mutate_strategy(
    *, parent_id: Any, seed: int | None = None, origin: str = CandidateOrigin.MUTATION,
    note: str = "", dispatch: bool = True,
) -> StrategyCandidate:  # fmt: skip
    """A polynomial mutation of a candidate, as a new standalone candidate to evaluate."""
    parent = selectors.candidate_get(candidate_id=parent_id)
    space = _space_of(parent)
    before = _genome_of(parent, space)
    if seed is None:
        seed = _seed(parent.pk, parent.children.count(), time.time_ns())
    genome = nsga.mutate(space, before, seed=seed)
    description = f"polynomial mutation of {str(parent.pk)[:8]}: " + describe_changes(
        space, before, genome
    )
    with transaction.atomic():
        child = _child_of(
            parents=[parent], genome=genome, space=space, origin=origin,
            description=f"{note}{description}",
        )  # fmt: skip
        if dispatch:
            _dispatch_after_commit([child.pk])
    return child


def crossover_strategies(
    *, first_id: Any, second_id: Any, seed: int | None = None, dispatch: bool = True
) -> StrategyCandidate:
    """SBX crossover of two candidates of the same model line, as a new candidate to evaluate."""
    first = selectors.candidate_get(candidate_id=first_id)
    second = selectors.candidate_get(candidate_id=second_id)
    if first.pk == second.pk:
        raise InvalidInput("a crossover needs two different candidates", field="second")
    if (first.model_type, first.symbol, first.timeframe) != (
        second.model_type, second.symbol, second.timeframe,
    ):  # fmt: skip
        raise InvalidInput(
            "both parents must share model type, symbol and timeframe", field="second"
        )
    space = _space_of(first)
    a, b = _genome_of(first, space), _genome_of(second, space)
    if seed is None:
        seed = _seed(first.pk, second.pk, time.time_ns())
    genome = nsga.crossover(space, a, b, seed=seed)
    description = (
        f"SBX crossover of {str(first.pk)[:8]} x {str(second.pk)[:8]}, then polynomial "
        f"mutation; against {str(first.pk)[:8]}: {describe_changes(space, a, genome)}"
    )
    with transaction.atomic():
        child = _child_of(
            parents=[first, second], genome=genome, space=space,
            origin=CandidateOrigin.CROSSOVER, description=description,
        )  # fmt: skip
        if dispatch:
            _dispatch_after_commit([child.pk])
    return child


def propose_new_candidates(
    *, performance_data: Mapping[str, Any], n: int = 3, dispatch: bool = True
) -> list[StrategyCandidate]:
    """When a production model performs poorly, propose `n` mutations of it to evaluate.

    `performance_data` names the model (`model_id`, or `model_type`, `symbol` and `timeframe`) and
    carries its recent `sharpe`; below `sharpe_threshold` (default 0.5, the original design's) the
    production version becomes a manual root candidate (created once) and its mutations are
    proposed; with a `regime`, they are regime adaptations. Returns [] when performance is fine.
    """
    sharpe = performance_data.get("sharpe")
    if not isinstance(sharpe, int | float) or not math.isfinite(sharpe):
        raise InvalidInput("performance_data needs a finite sharpe", field="sharpe")
    threshold = performance_data.get("sharpe_threshold", POOR_SHARPE)
    if not 1 <= n <= 32:
        raise InvalidInput("n must be between 1 and 32", field="n")
    if sharpe >= threshold:
        return []
    from registry.selectors import production_version_get

    model_id = performance_data.get("model_id") or RegisteredModel.make_model_id(
        str(performance_data.get("model_type", "")),
        str(performance_data.get("symbol", "")),
        str(performance_data.get("timeframe", "")),
    )
    version = production_version_get(model_id=model_id)
    model = version.model
    if model.model_type not in supported_model_types():
        raise InvalidInput(
            f"evolution supports {', '.join(supported_model_types())}, not {model.model_type}",
            field="model_id",
        )
    regime = performance_data.get("regime")
    origin = CandidateOrigin.REGIME_ADAPTATION if regime else CandidateOrigin.MUTATION
    note = (
        f"{'regime ' + str(regime) + '; ' if regime else ''}production v{version.version} "
        f"Sharpe {sharpe:.3f} < {threshold}; "
    )
    with transaction.atomic():
        root = _production_root(version)
        children = [
            mutate_strategy(
                parent_id=root.pk,
                seed=_seed(root.pk, root.children.count(), i, sharpe),
                origin=origin,
                note=note,
                dispatch=False,
            )
            for i in range(n)
        ]
        if dispatch:
            pending = [c.pk for c in (root, *children)]
            _dispatch_after_commit(pending)
    return children


def _production_root(version: Any) -> StrategyCandidate:
    """The candidate standing for a production version (one per version), the lineage's root."""
    existing = (
        StrategyCandidate.objects.filter(produced_version=version, origin=CandidateOrigin.MANUAL)
        .defer("oos_returns")
        .first()
    )
    if existing is not None:
        return existing
    model = version.model
    params = {**version.params, "features": version.feature_spec or {}}
    space = resolve_search_space(model.model_type)
    return StrategyCandidate.objects.create(
        base_strategy=model.model_id,
        model_type=model.model_type,
        symbol=model.symbol,
        timeframe=model.timeframe,
        params=params,
        genome=list(space.encode(params)),
        origin=CandidateOrigin.MANUAL,
        mutation_description=f"production version v{version.version} of {model.model_id}",
        status=CandidateStatus.ACTIVE,
        produced_version=version,
    )


def _dispatch_after_commit(candidate_ids: Sequence[Any]) -> None:

    ids = [str(pk) for pk in candidate_ids]

    def send() -> None:
        try:
            enqueue_candidates(candidate_ids=ids)
        except Exception as exc:  # broker down: candidates stay pending, the reaper sends them
            logger.warning("dispatch of candidates %s failed: %s", ids, exc)

    transaction.on_commit(send)
