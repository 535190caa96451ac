"""The one promotion decision: given what is known about a version, promote it, keep it as a
candidate, send it to shadow, or fail it; and the one way a decision is carried out.

The pipeline (after the gates), shadow comparisons and experiments (once their test says the
version is better) all decide here, so auto-promotion, the shadow policy and the wording of the
audit reason mean the same everywhere. A person promoting or rolling back through the admin or the
API needs no decision: they call registry.services directly. Automatic rollback is the reverse
move and lives in rollback.py.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings

from registry import services
from registry.models import ModelStatus
from training.promotion.policies import evaluation_policy_for


class Outcome(enum.StrEnum):
    PROMOTE = "promote"
    CANDIDATE = "candidate"
    SHADOW = "shadow"
    FAIL = "fail"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str


def auto_promotion_on(model_type: str, *, flag: bool = True) -> bool:
    """Auto-promotion needs all three: the deployment (CLM_AUTO_PROMOTE), the model type's
    promotion policy, and the flag of the comparison or experiment that asks (if any)."""
    policy = evaluation_policy_for(model_type, auto_promote_default=settings.CLM_AUTO_PROMOTE)
    return flag and policy.auto_promote


def decide(
    *,
    basis: str,
    better: bool,
    auto_promote: bool,
    against: str = "",
    evidence: str = "",
    failing_gates: Sequence[str] = (),
    shadow_reason: str | None = None,
) -> Decision:
    """What to do with a version, and the reason its audit row gets.

    basis: what the version has shown ("passed gates", "shadow comparison 3: ..."); better:
    whether that beats production (or there is none); against: what it was compared with
    ("production Sharpe 1.2"); evidence: the comparison itself, for a promotion's reason
    ("Sharpe 1.4 vs production Sharpe 1.2"); auto_promote: see auto_promotion_on; failing_gates:
    the gates it failed, if any; shadow_reason: why it should first prove itself in shadow (the
    shadow policy).
    """
    if failing_gates:
        return Decision(Outcome.FAIL, f"failed gates: {', '.join(failing_gates)}")
    if shadow_reason is not None:
        return Decision(Outcome.SHADOW, f"{basis}; {shadow_reason}")
    if better and auto_promote:
        return Decision(Outcome.PROMOTE, f"{basis}; {evidence}" if evidence else basis)
    why = "auto-promotion is off" if better else f"does not beat {against}"
    return Decision(Outcome.CANDIDATE, f"{basis}; {why}")


def enact(
    decision: Decision, *, model_id: str, version: int, actor: str, from_training: bool = False
) -> None:
    """Carry out a promote, candidate or fail decision through registry.services (audit row and
    event included). A shadow decision is carried out by shadow.shadow_start, which also opens
    the comparison."""
    if decision.outcome == Outcome.SHADOW:
        raise ValueError("a shadow decision is enacted by shadow_start")
    if decision.outcome == Outcome.FAIL:
        services.model_version_set_status(
            model_id=model_id, version=version, status=ModelStatus.FAILED, actor=actor,
            reason=decision.reason,
        )  # fmt: skip
        return
    if decision.outcome == Outcome.CANDIDATE or from_training:
        # A freshly trained version becomes a candidate first, so its audit shows both steps.
        services.model_version_set_status(
            model_id=model_id, version=version, status=ModelStatus.CANDIDATE, actor=actor,
            reason=decision.reason if decision.outcome == Outcome.CANDIDATE else "passed gates",
        )  # fmt: skip
    if decision.outcome == Outcome.PROMOTE:
        services.model_version_promote(
            model_id=model_id, version=version, actor=actor, reason=decision.reason
        )
