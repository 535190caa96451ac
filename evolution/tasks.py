"""Thin Celery wrappers over `evolution.services`: tasks take ids and delegate; every one is
idempotent, which is what makes late acknowledgement (a killed worker's message comes back) safe.
How they are sent (a chord per generation) is `evolution.dispatch`."""

from __future__ import annotations

from celery import shared_task

from evolution import services


@shared_task(name="evolution.evaluate_candidate", bind=True, acks_late=True)
def evaluate_candidate(self, candidate_id: str) -> str:
    """Train and backtest one candidate. Returns its outcome; never fails for a bad candidate, so
    the chord always reaches its callback."""
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    return services.candidate_evaluate(candidate_id=candidate_id, redelivered=redelivered)


@shared_task(name="evolution.gather_generation", acks_late=True)
def gather_generation(generation_id: int) -> str:
    """The chord's callback: complete the generation and propose the next (or end the run)."""
    return services.generation_advance(generation_id=generation_id)


@shared_task(name="evolution.reap_runs")
def reap_runs() -> dict[str, int]:
    """Periodic upkeep: stalled generations re-dispatched, lifecycle statuses followed."""
    return services.evolution_runs_reap()
