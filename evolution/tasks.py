"""Thin Celery wrappers: a generation is a chord of per-candidate evaluations gathered by one
callback. Tasks take ids and delegate to `evolution.services`; every one is idempotent, which is
what makes late acknowledgement (a killed worker's message comes back) safe.

The chord needs a result backend (CELERY_RESULT_BACKEND, Redis in tests and production).
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import chord, group, shared_task
from django.conf import settings

from registry.services import time_limits_for


@shared_task(name="evolution.evaluate_candidate", bind=True, acks_late=True)
def evaluate_candidate(self, candidate_id: str) -> str:
    """Train and backtest one candidate. Returns its outcome; never fails for a bad candidate, so
    the chord always reaches its callback."""
    from evolution.services import candidate_evaluate

    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    return candidate_evaluate(candidate_id=candidate_id, redelivered=redelivered)


@shared_task(name="evolution.gather_generation", acks_late=True)
def gather_generation(generation_id: int) -> str:
    """The chord's callback: complete the generation and propose the next (or end the run)."""
    from evolution.services import generation_advance

    return generation_advance(generation_id=generation_id)


@shared_task(name="evolution.reap_runs")
def reap_runs() -> dict[str, int]:
    """Periodic upkeep: stalled generations re-dispatched, lifecycle statuses followed."""
    from evolution.services import evolution_runs_reap

    return evolution_runs_reap()


def _evaluation(candidate_id: str, model_type: str | None = None):
    soft, hard = time_limits_for(model_type or "other")
    return evaluate_candidate.si(candidate_id).set(
        queue=settings.CLM_TRAINING_QUEUE, soft_time_limit=soft, time_limit=hard
    )


def enqueue_generation(
    *, generation_id: int, candidate_ids: Sequence[str], model_type: str
) -> None:
    """One chord: every unfinished candidate in parallel, then the gathering callback."""
    callback = gather_generation.si(generation_id).set(queue=settings.CLM_TRAINING_QUEUE)
    if not candidate_ids:
        callback.apply_async()
        return
    chord(group(_evaluation(cid, model_type) for cid in candidate_ids))(callback)


def enqueue_candidates(*, candidate_ids: Sequence[str]) -> None:
    """Standalone candidates (proposed outside a run): evaluated in parallel, nothing to gather."""
    if candidate_ids:
        group(_evaluation(cid) for cid in candidate_ids).apply_async()
