"""Seed a registry of `models x versions` rows with bulk inserts (benchmark data, not a service).

Each model has versions 1..N: the last one in production, the one before a passed candidate, one
failed, the rest retired after a turn in production. Every version has an evaluation, every fourth
a second one, and points at its newest (`latest_evaluation`, as the pipeline keeps it); every
version has its `register` audit row and the live ones their `promote` row.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction

from registry.models import (
    EvaluationResult,
    LifecycleAction,
    LifecycleEvent,
    ModelStatus,
    ModelType,
    ModelVersion,
    OutboxEvent,
    RegisteredModel,
    Timeframe,
    TrainingJob,
)

BATCH = 5_000
START = datetime(2025, 1, 1, tzinfo=UTC)
METRICS = {
    "sharpe": 1.4, "sortino": 1.9, "max_drawdown": 0.09, "total_return": 0.21, "cagr": 0.3,
    "calmar": 3.3, "exposure": 0.55, "trades": 70, "win_rate": 0.55, "profit_factor": 1.5,
    "avg_trade_return": 0.003, "avg_bars_held": 5.0, "psr": 0.95, "dsr": 0.9,
}  # fmt: skip
GATES = {"sharpe": {"value": 1.4, "threshold": 1.0, "op": ">=", "passed": True}}


def _status(version: int, last: int) -> str:
    if version == last:
        return ModelStatus.PRODUCTION
    if version == last - 1:
        return ModelStatus.CANDIDATE
    if version == last - 2:
        return ModelStatus.FAILED
    return ModelStatus.RETIRED


def _models(n_models: int) -> Iterator[RegisteredModel]:
    types, frames = ModelType.values, Timeframe.values
    for i in range(n_models):
        model_type, timeframe = types[i % len(types)], frames[(i // len(types)) % len(frames)]
        symbol = f"S{i // (len(types) * len(frames)):04d}USDT"
        yield RegisteredModel(
            model_id=RegisteredModel.make_model_id(model_type, symbol, timeframe),
            model_type=model_type,
            symbol=symbol,
            timeframe=timeframe,
        )


def seed(*, n_models: int, per_model: int) -> None:
    """Replace the registry's rows with the benchmark data set."""
    tables = [
        m._meta.db_table
        for m in (
            EvaluationResult,
            LifecycleEvent,
            TrainingJob,
            ModelVersion,
            RegisteredModel,
            OutboxEvent,
        )
    ]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    models = RegisteredModel.objects.bulk_create(_models(n_models), batch_size=BATCH)
    RegisteredModel.objects.update(next_version=per_model + 1)
    chunk = max(1, BATCH // per_model)
    for start in range(0, len(models), chunk):
        with transaction.atomic():
            _seed_versions(models[start : start + chunk], per_model)
    _spread_timestamps()


def _seed_versions(models: list[RegisteredModel], per_model: int) -> None:
    versions = ModelVersion.objects.bulk_create(
        ModelVersion(
            model=model,
            version=v,
            status=_status(v, per_model),
            artifact_sha256="0" * 64,
            params={"max_depth": 4 + v % 3, "learning_rate": 0.05},
            feature_spec={"lags": [1, 2, 4, 8], "windows": [12, 48]},
            training_metrics={"loss": 0.1, "rows": 20_000},
            manifest={"format": "bench"},
        )
        for model in models
        for v in range(1, per_model + 1)
    )
    EvaluationResult.objects.bulk_create(
        EvaluationResult(
            version=version,
            window_start=START,
            window_end=START + timedelta(days=30),
            n_bars=720,
            fee=0.0005,
            periods_per_year=8760,
            n_trials=version.version,
            gates=GATES,
            passed=version.status != ModelStatus.FAILED,
            **{**METRICS, "sharpe": 0.5 + (version.pk * 7919 % 2000) / 1000},
        )
        for version in versions
        for _ in range(2 if version.version % 4 == 0 else 1)
    )
    audit = []
    for version in versions:
        audit.append(
            LifecycleEvent(
                model_id=version.model_id,
                version=version,
                actor="seed",
                action=LifecycleAction.REGISTER,
                to_status=ModelStatus.TRAINING,
            )
        )
        if version.status in (ModelStatus.PRODUCTION, ModelStatus.RETIRED):
            audit.append(
                LifecycleEvent(
                    model_id=version.model_id,
                    version=version,
                    actor="seed",
                    action=LifecycleAction.PROMOTE,
                    from_status="candidate",
                    to_status=ModelStatus.PRODUCTION,
                )
            )
    LifecycleEvent.objects.bulk_create(audit)


def _spread_timestamps() -> None:
    """`auto_now_add` stamped every row with the seeding time; give them a believable history."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE registry_modelversion SET created_at = %s + version * interval '1 day'"
            " + model_id * interval '1 second'",
            [START],
        )
        cursor.execute(
            "UPDATE registry_modelversion SET promoted_at = created_at + interval '1 hour',"
            " retired_at = CASE WHEN status = 'retired' THEN created_at + interval '1 day' END"
            " WHERE status IN ('production', 'retired')"
        )
        cursor.execute(
            "UPDATE registry_evaluationresult e SET created_at = v.created_at"
            " + e.id * interval '1 millisecond' FROM registry_modelversion v"
            " WHERE e.version_id = v.id"
        )
        cursor.execute(
            "UPDATE registry_lifecycleevent a SET created_at = v.created_at"
            " + (CASE WHEN a.action = 'register' THEN 0 ELSE 1 END) * interval '1 hour'"
            " FROM registry_modelversion v WHERE a.version_id = v.id"
        )
        # What the pipeline's save_evaluation keeps on each version: its newest evaluation (so a
        # page of versions carries one, as in a real registry) and that evaluation's Sharpe.
        cursor.execute(
            "UPDATE registry_modelversion v SET latest_evaluation_id = e.id,"
            " latest_sharpe = e.sharpe FROM (SELECT DISTINCT ON (version_id) version_id, id,"
            " sharpe FROM registry_evaluationresult ORDER BY version_id, created_at DESC, id DESC)"
            " e WHERE e.version_id = v.id"
        )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
