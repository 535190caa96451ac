"""Upkeep: candidates follow their versions' lifecycle; stalled runs are re-dispatched."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from evolution.dispatch import enqueue_candidates
from evolution.models import (
    CandidateStatus,
    EvaluationStatus,
    EvolutionRun,
    GenerationStatus,
    RunStatus,
    StrategyCandidate,
)
from evolution.services.runs import generation_dispatch, run_continue, stale_claims_release
from registry.models import (
    JobStatus,
    ModelStatus,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Upkeep: lifecycle statuses from the registry, stalled runs


_STATUS_OF_VERSION = {
    ModelStatus.TRAINING: CandidateStatus.TRAINING,
    # Passed its gates but not live: it waits beside production, as a shadow does.
    ModelStatus.CANDIDATE: CandidateStatus.SHADOW,
    ModelStatus.SHADOW: CandidateStatus.SHADOW,
    ModelStatus.PRODUCTION: CandidateStatus.ACTIVE,
    ModelStatus.RETIRED: CandidateStatus.RETIRED,
    ModelStatus.FAILED: CandidateStatus.FAILED,
}


def candidates_sync_lifecycle() -> int:
    """Follow selected candidates through the registry: their job's version decides their status.
    Returns how many changed."""
    changed = 0
    rows = (
        StrategyCandidate.objects.filter(
            status__in=[CandidateStatus.TRAINING, CandidateStatus.SHADOW, CandidateStatus.ACTIVE]
        )
        .filter(Q(training_job__isnull=False) | Q(produced_version__isnull=False))
        .select_related("training_job__version", "produced_version")
        .defer("oos_returns")
    )
    for candidate in rows:
        job = candidate.training_job
        version = (job.version if job is not None else None) or candidate.produced_version
        if version is not None:
            status = _STATUS_OF_VERSION[version.status]
        elif job is not None and job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            status = CandidateStatus.FAILED
        else:
            continue
        if status != candidate.status or version != candidate.produced_version:
            changed += StrategyCandidate.objects.filter(
                pk=candidate.pk, status=candidate.status
            ).update(status=status, produced_version=version)
    return changed


STALL_AFTER = timedelta(minutes=10)


def evolution_runs_reap() -> dict[str, int]:
    """Repair running runs: release dead claims (no heartbeat within the lease) and re-dispatch
    their generation, as for generations that made no progress for STALL_AFTER; continue runs
    whose last generation completed but went no further; dispatch standalone candidates left
    pending; sync lifecycle statuses."""
    counts = {"redispatched": 0, "continued": 0, "released": 0, "standalone": 0, "synced": 0}
    now = timezone.now()
    for run in EvolutionRun.objects.filter(status=RunStatus.RUNNING):
        latest = run.generation_set.order_by("-number").first()
        if latest is None:
            continue
        if latest.status == GenerationStatus.COMPLETE:
            run_continue(run_id=run.pk)
            counts["continued"] += 1
            continue
        released = stale_claims_release(run)
        counts["released"] += released
        recent = latest.candidates.filter(
            Q(claimed_at__gte=now - STALL_AFTER) | Q(evaluated_at__gte=now - STALL_AFTER)
        ).exists()
        # Released claims are sent again at once; a generation idle for STALL_AFTER too.
        if released or (not recent and latest.created_at < now - STALL_AFTER):
            generation_dispatch(generation_id=latest.pk)
            counts["redispatched"] += 1
    standalone = list(
        StrategyCandidate.objects.filter(
            run__isnull=True,
            evaluation_status=EvaluationStatus.PENDING,
            created_at__lt=now - STALL_AFTER,
        ).values_list("pk", flat=True)
    )
    if standalone:
        enqueue_candidates(candidate_ids=[str(pk) for pk in standalone])
        counts["standalone"] = len(standalone)
    counts["synced"] = candidates_sync_lifecycle()
    return counts
