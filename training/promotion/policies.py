"""Per-model-type settings the pipeline reads: gates and fees from the admin-editable policy."""

from __future__ import annotations

from dataclasses import dataclass

from clm_project.compiled import CompiledQuery
from training.promotion.gates import GateThresholds
from training.promotion.models import PromotionPolicy


@dataclass(frozen=True)
class EvaluationPolicy:
    gates: GateThresholds
    auto_promote: bool
    fee: float
    eval_fraction: float
    validation_fraction: float


# Read at the start of every training job: compiled once per process (clm_project.compiled).
_POLICY = CompiledQuery(
    lambda model_type: PromotionPolicy.objects.filter(model_type=model_type), model_type=str
)


def evaluation_policy_for(model_type: str, *, auto_promote_default: bool) -> EvaluationPolicy:
    policy = _POLICY.first(model_type=model_type)  # model_type is unique
    if policy is None:
        return EvaluationPolicy(GateThresholds(), auto_promote_default, 0.0005, 0.25, 0.2)
    return EvaluationPolicy(
        gates=GateThresholds(
            min_sharpe=policy.min_sharpe,
            min_win_rate=policy.min_win_rate,
            min_profit_factor=policy.min_profit_factor,
            max_drawdown=policy.max_drawdown,
            min_trades=policy.min_trades,
            min_dsr=policy.min_dsr,
            regime_min_bars=policy.regime_min_bars,
            regime_max_loss=policy.regime_max_loss,
        ),
        auto_promote=policy.auto_promote and auto_promote_default,
        fee=policy.fee,
        eval_fraction=policy.eval_fraction,
        validation_fraction=policy.validation_fraction,
    )
