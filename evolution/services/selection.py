"""Selection of a candidate for production: a training job for its genome."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from clm_project.exceptions import DomainError
from evolution import selectors
from evolution.models import (
    CandidateStatus,
    EvaluationStatus,
    StrategyCandidate,
)
from registry import services as registry_services
from registry.models import (
    EventType,
    TriggerReason,
)
from training.models import TriggerOutcome, TriggerSource
from training.promotion.policies import evaluation_policy_for
from training.retraining.triggers import Origin, trigger_training

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Selection for production


def candidate_select(
    *, candidate_id: Any, actor: str, reason: str = ""
) -> tuple[StrategyCandidate, Any]:
    """Send an evaluated candidate to the training pipeline with its params.

    One transaction: the training job (trigger strategy_evolution), the strategy_candidate_created
    event and the candidate's move to `training`. Its deflated Sharpe ratio, with K = every
    evaluation and candidate on the same data, is recorded beside its Sharpe; when the model
    type's promotion policy sets `min_dsr` (0.95 by default) and there is more than one trial, a
    candidate below it is refused here, as its version would be at the gate.
    """
    candidate = selectors.candidate_get(candidate_id=candidate_id)
    _check_selectable(candidate)
    dsr, trials = selectors.candidate_deflated_sharpe(candidate=candidate)
    min_dsr = evaluation_policy_for(
        candidate.model_type, auto_promote_default=settings.CLM_AUTO_PROMOTE
    ).gates.min_dsr
    if min_dsr is not None and trials > 1 and (dsr is None or dsr < min_dsr):
        shown = "unknown" if dsr is None else f"{dsr:.3f}"
        raise DomainError(
            f"candidate {candidate.pk} has a deflated Sharpe ratio of {shown} over {trials} "
            f"trials; the {candidate.model_type} promotion gates require at least {min_dsr}",
            extra={"dsr": dsr, "dsr_trials": trials, "min_dsr": min_dsr},
        )
    sharpe = candidate.metrics.get("sharpe")
    context = {
        "candidate_id": str(candidate.pk),
        "run_id": str(candidate.run_id) if candidate.run_id else None,
        "generation": candidate.generation.number if candidate.generation_id else None,
        "sharpe": sharpe,
        "dsr": dsr,
        "dsr_trials": trials,
        "reason": reason,
        # The job's test window starts after this bar (training.pipeline): bars no selection saw.
        "search_seen_until": selectors.search_seen_until(candidate=candidate),
    }
    with transaction.atomic():
        locked = (
            StrategyCandidate.objects.select_for_update().defer("oos_returns").get(pk=candidate.pk)
        )
        _check_selectable(locked)
        # Through the trigger handlers like every other door: the selection is recorded.
        result = trigger_training(
            model_type=candidate.model_type,
            symbol=candidate.symbol,
            timeframe=candidate.timeframe,
            trigger_reason=TriggerReason.STRATEGY_EVOLUTION,
            params=candidate.params,
            seed=candidate.run.seed if candidate.run_id else 0,
            origin=Origin(source=TriggerSource.INTERNAL, requested_by=actor, context=context),
        )
        job = result.job
        if job is None:
            raise DomainError(result.record.reason)
        if result.outcome != TriggerOutcome.CREATED:
            raise DomainError(
                f"{job.model.model_id} already has an active training job {job.pk}; select the "
                "candidate again when it has finished",
                extra={"job_id": str(job.pk)},
            )
        parents = selectors.candidate_parent_ids(candidate=candidate)
        registry_services.outbox_event_write(
            event_type=EventType.STRATEGY_CANDIDATE_CREATED,
            model_id=job.model.model_id,
            payload={
                **context,
                "job_id": str(job.pk),
                "origin": candidate.origin,
                "parents": parents,
                "params": candidate.params,
                "metrics": {
                    name: candidate.metrics.get(name)
                    for name in ("sharpe", "max_drawdown", "profit_factor", "trades", "win_rate")
                },
                "selected_by": actor,
            },
        )
        locked.status = CandidateStatus.TRAINING
        locked.training_job = job
        locked.dsr = dsr
        locked.dsr_trials = trials
        locked.selected_by = actor
        locked.selected_at = timezone.now()
        locked.save(
            update_fields=[
                "status", "training_job", "dsr", "dsr_trials", "selected_by", "selected_at",
            ]
        )  # fmt: skip
    return locked, job


def _check_selectable(candidate: StrategyCandidate) -> None:
    if candidate.evaluation_status != EvaluationStatus.EVALUATED:
        raise DomainError(
            f"candidate {candidate.pk} is not evaluated (evaluation {candidate.evaluation_status})"
            "; only evaluated candidates can be selected"
        )
    if candidate.status != CandidateStatus.PROPOSED:
        raise DomainError(
            f"candidate {candidate.pk} is {candidate.status}; only proposed candidates can be "
            "selected"
        )
