"""The registry: training jobs, model versions, evaluations, the lifecycle audit and the outbox.

Only `registry.services` writes these tables; the constraints below are what actually guarantee the
invariants (services check first to give a good message).
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q


class ModelType(models.TextChoices):
    XGBOOST = "xgboost", "XGBoost"
    LIGHTGBM = "lightgbm", "LightGBM"
    NHITS = "nhits", "NHITS"
    PATCHTST = "patchtst", "PatchTST"
    RL_V2 = "rl_v2", "RL v2"
    RL_V3 = "rl_v3", "RL v3"
    OTHER = "other", "Other"


class ModelStatus(models.TextChoices):
    TRAINING = "training"
    SHADOW = "shadow"
    CANDIDATE = "candidate"
    PRODUCTION = "production"
    RETIRED = "retired"
    FAILED = "failed"


class TriggerReason(models.TextChoices):
    DRIFT_DETECTED = "drift_detected"
    PERFORMANCE_DEGRADED = "performance_degraded"
    PERIODIC = "periodic"
    MANUAL = "manual"
    REGIME_CHANGE = "regime_change"
    STRATEGY_EVOLUTION = "strategy_evolution"


class JobStatus(models.TextChoices):
    # Requested with if_active=queue while the model had an active job: starts after it ends.
    WAITING = "waiting"
    PENDING = "pending"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_JOB_STATUSES = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.IN_PROGRESS)


class Timeframe(models.TextChoices):
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    H4 = "4h"
    D1 = "1d"


class EventType(models.TextChoices):
    TRAINING_JOB_CREATED = "training_job_created"
    MODEL_TRAINED = "model_trained"
    MODEL_EVALUATED = "model_evaluated"
    MODEL_PROMOTED = "model_promoted"
    MODEL_ROLLBACK = "model_rollback"
    STRATEGY_CANDIDATE_CREATED = "strategy_candidate_created"


class LifecycleAction(models.TextChoices):
    REGISTER = "register"
    CANDIDATE = "candidate"
    SHADOW = "shadow"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    RETIRE = "retire"
    FAIL = "fail"


class RegisteredModel(models.Model):
    """One model line: a model type trained for one symbol and timeframe."""

    model_id = models.SlugField(max_length=120, unique=True)
    model_type = models.CharField(max_length=16, choices=ModelType.choices)
    symbol = models.CharField(max_length=32)
    timeframe = models.CharField(max_length=4, choices=Timeframe.choices)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True)
    notes = models.TextField(blank=True)
    # Next version number to hand out, bumped under a row lock: no gaps, no duplicates.
    next_version = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_type", "symbol", "timeframe"], name="uniq_model_type_symbol_tf"
            ),
        ]

    def __str__(self) -> str:
        return self.model_id

    @staticmethod
    def make_model_id(model_type: str, symbol: str, timeframe: str) -> str:
        return f"{model_type}-{symbol}-{timeframe}".lower().replace("_", "-").replace("/", "")


class TrainingJob(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="jobs")
    model_type = models.CharField(max_length=16, choices=ModelType.choices)
    symbol = models.CharField(max_length=32)
    timeframe = models.CharField(max_length=4, choices=Timeframe.choices)
    trigger_reason = models.CharField(max_length=32, choices=TriggerReason.choices)
    trigger_context = models.JSONField(default=dict, blank=True)
    # Triggers that arrived while this job was active and joined it instead of queueing another.
    joined_triggers = models.JSONField(default=list, blank=True)
    params = models.JSONField(default=dict, blank=True)
    seed = models.IntegerField(default=0)
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING)
    progress = models.FloatField(default=0.0)
    step = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    error_step = models.CharField(max_length=64, blank=True)
    requested_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    celery_task_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Liveness: when the current step began, when the worker running the job last said it is
    # alive, when the job was last sent to the broker and how often the reaper re-sent it.
    step_started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    redispatches = models.PositiveIntegerField(default=0)
    step_durations = models.JSONField(default=dict, blank=True)
    queued_after = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The active job this one waited for (requested with if_active=queue).",
    )
    version = models.OneToOneField(
        "ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="produced_by"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"])]
        permissions = [("request_training", "Can request training jobs")]
        constraints = [
            models.CheckConstraint(
                condition=Q(progress__gte=0.0) & Q(progress__lte=1.0), name="job_progress_0_1"
            ),
            models.UniqueConstraint(
                fields=["model"],
                condition=Q(status__in=["pending", "queued", "in_progress"]),
                name="one_active_job_per_model",
            ),
        ]

    def __str__(self) -> str:
        model = self.model.model_id if self.model_id else "-"
        return f"{model} job {str(self.id)[:8]} ({self.trigger_reason}, {self.status})"


class LivenessKind(models.TextChoices):
    WORKER = "worker"
    BEAT = "beat"


class Liveness(models.Model):
    """The last sign of life of a worker (per hostname) or of celery-beat, for `/health`."""

    name = models.CharField(max_length=200, primary_key=True)
    kind = models.CharField(max_length=16, choices=LivenessKind.choices)
    seen_at = models.DateTimeField()
    info = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["kind", "name"]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} at {self.seen_at:%Y-%m-%d %H:%M:%S}"


class ModelVersion(models.Model):
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    status = models.CharField(
        max_length=16, choices=ModelStatus.choices, default=ModelStatus.TRAINING, db_index=True
    )
    artifact_path = models.CharField(max_length=500, blank=True)
    artifact_sha256 = models.CharField(max_length=64, blank=True)
    artifact_size = models.PositiveBigIntegerField(default=0)
    params = models.JSONField(default=dict, blank=True)
    feature_spec = models.JSONField(default=dict, blank=True)
    training_metrics = models.JSONField(default=dict, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    train_start = models.DateTimeField(null=True, blank=True)
    train_end = models.DateTimeField(null=True, blank=True)
    failed_gates = models.JSONField(default=list, blank=True)
    # The newest evaluation and its Sharpe, kept by registry.services.evaluation_record so that
    # lists join one row instead of searching every version's evaluations.
    latest_evaluation = models.ForeignKey(
        "EvaluationResult", null=True, blank=True, editable=False, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    latest_sharpe = models.FloatField(null=True, blank=True, editable=False, db_index=True)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["model_id", "-version"]
        permissions = [("promote_modelversion", "Can promote and roll back model versions")]
        # The version lists' orderings with their tie-break on id (registry.selectors.ORDERINGS):
        # a page's ids come from the index alone, without reading the rows before it.
        indexes = [
            models.Index(fields=["-created_at", "id"], name="version_newest_first"),
            models.Index(fields=["created_at", "id"], name="version_oldest_first"),
            models.Index(fields=["status", "-created_at", "id"], name="version_status_newest"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["model", "version"], name="uniq_model_version"),
            models.UniqueConstraint(
                fields=["model"], condition=Q(status="production"), name="one_production_per_model"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model.model_id} v{self.version}"


class EvaluationResult(models.Model):
    """An out-of-sample backtest of one version, with every METRICS.md figure and gate verdict."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="evaluations")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    n_bars = models.PositiveIntegerField()
    fee = models.FloatField()
    periods_per_year = models.PositiveIntegerField()
    n_trials = models.PositiveIntegerField(default=1)
    sharpe = models.FloatField()
    sortino = models.FloatField()
    max_drawdown = models.FloatField()
    total_return = models.FloatField()
    cagr = models.FloatField()
    calmar = models.FloatField()
    exposure = models.FloatField()
    trades = models.PositiveIntegerField()
    win_rate = models.FloatField()
    profit_factor = models.FloatField(null=True, blank=True, help_text="Null when infinite.")
    profit_factor_infinite = models.BooleanField(default=False)
    avg_trade_return = models.FloatField()
    avg_bars_held = models.FloatField()
    psr = models.FloatField()
    dsr = models.FloatField()
    benchmark_sharpe = models.FloatField(
        null=True, blank=True, help_text="Buy and hold, same bars."
    )
    gates = models.JSONField(default=dict, blank=True)
    regime_slices = models.JSONField(
        default=dict,
        blank=True,
        help_text="Per regime of the window's bars: bars, share, sharpe, total_return, "
        "max_drawdown, trades; absent regimes as {bars: 0, absent: true}.",
    )
    passed = models.BooleanField()
    equity_curve = models.CharField(max_length=500, blank=True)
    # The picture's points, stored by the job; the PNG is drawn from them when first asked for
    # (registry.services.equity_curve_png_ensure) and kept in `equity_curve`.
    equity_series = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["version", "-created_at"])]

    def __str__(self) -> str:
        return f"evaluation of {self.version} ({'pass' if self.passed else 'fail'})"


class LifecycleEvent(models.Model):
    """Audit row for every status change of a version. Append-only."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="audit")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="audit")
    action = models.CharField(max_length=16, choices=LifecycleAction.choices)
    from_status = models.CharField(max_length=16, choices=ModelStatus.choices, blank=True)
    to_status = models.CharField(max_length=16, choices=ModelStatus.choices)
    actor = models.CharField(max_length=150, blank=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model", "created_at"])]

    def __str__(self) -> str:
        return f"{self.version} {self.from_status or '-'} -> {self.to_status} ({self.action})"


class OutboxEvent(models.Model):
    """An event written in the same transaction as the change it reports; relayed later."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    event_type = models.CharField(max_length=40, choices=EventType.choices, db_index=True)
    model_id = models.CharField(max_length=120, blank=True, db_index=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["created_at"], condition=Q(published_at__isnull=True), name="outbox_unpub"
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.model_id}"


class VersionsRevision(models.Model):
    """One row whose `revision` PostgreSQL sets from a sequence, in the same transaction, whenever
    a statement changes what a count of versions could depend on (a version inserted or deleted,
    its status, Sharpe, model or creation time changed; a model renamed). A count cached under a
    revision is therefore exact while the revision reads the same (registry.selectors
    .model_versions_count); a sequence never hands out a number twice, even across rollbacks.
    Written by the trigger of migration 0008 only."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    revision = models.BigIntegerField(default=0, editable=False)

    def __str__(self) -> str:
        return f"versions revision {self.revision}"
