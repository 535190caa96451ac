"""How evolution work reaches the workers: a generation is a chord of per-candidate evaluations
gathered by one callback; standalone candidates are a group. Tasks are addressed by their
registered names, so the services that dispatch need not import the task module that calls them.

The chord needs a result backend (CELERY_RESULT_BACKEND, Redis in tests and production).
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Signature, chord, group
from django.conf import settings

from clm_project.celery import app, tasks_loaded
from registry.services import time_limits_for, training_queue_for

EVALUATE_CANDIDATE = "evolution.evaluate_candidate"
GATHER_GENERATION = "evolution.gather_generation"


def _evaluation(candidate_id: str, model_type: str | None = None) -> Signature:
    if EVALUATE_CANDIDATE not in app.tasks:
        tasks_loaded()  # an eager group runs the task here
    soft, hard = time_limits_for(model_type or "other")
    return app.signature(
        EVALUATE_CANDIDATE,
        args=(candidate_id,),
        immutable=True,
        queue=training_queue_for(model_type or "other"),  # a deep family's fits go to `gpu`
        soft_time_limit=soft,
        time_limit=hard,
    )


def enqueue_generation(
    *, generation_id: int, candidate_ids: Sequence[str], model_type: str
) -> None:
    """One chord: every unfinished candidate in parallel, then the gathering callback."""
    callback = app.signature(
        GATHER_GENERATION, args=(generation_id,), immutable=True, queue=settings.CLM_TRAINING_QUEUE
    )
    if not candidate_ids:
        callback.apply_async()
        return
    chord(group(_evaluation(cid, model_type) for cid in candidate_ids))(callback)


def enqueue_candidates(*, candidate_ids: Sequence[str]) -> None:
    """Standalone candidates (proposed outside a run): evaluated in parallel, nothing to gather."""
    if candidate_ids:
        group(_evaluation(cid) for cid in candidate_ids).apply_async()
