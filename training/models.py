"""Market data (OHLCV bars) and retraining: policies, trigger records, monitor results, scans."""

from __future__ import annotations

from django.db import models

from registry.models import (
    ModelType,
    ModelVersion,
    RegisteredModel,
    Timeframe,
    TrainingJob,
    TriggerReason,
)


class Bar(models.Model):
    symbol = models.CharField(max_length=32)
    timeframe = models.CharField(max_length=4, choices=Timeframe.choices)
    timestamp = models.DateTimeField()
    open = models.FloatField()
    high = models.FloatField()
    low = models.FloatField()
    close = models.FloatField()
    volume = models.FloatField()

    class Meta:
        ordering = ["symbol", "timeframe", "timestamp"]
        constraints = [
            models.UniqueConstraint(
                fields=["symbol", "timeframe", "timestamp"], name="uniq_bar_symbol_tf_ts"
            ),
            models.CheckConstraint(
                condition=models.Q(low__lte=models.F("high"))
                & models.Q(close__gt=0)
                & models.Q(volume__gte=0),
                name="bar_sane_prices",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.symbol} {self.timeframe} {self.timestamp:%Y-%m-%d %H:%M}"


class BarRevision(models.Model):
    """A number that changes whenever a series' stored bars change: database triggers on
    training_bar (migration 0005) set it from one sequence on every insert, update, delete and
    truncate, whoever writes. A number is never reused, even after a rollback, so a worker that
    cached a series' bars under one (training.data.bars.fetch_training_data) knows they are still
    the stored ones while it reads the same number."""

    symbol = models.CharField(max_length=32)
    timeframe = models.CharField(max_length=4, choices=Timeframe.choices)
    revision = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["symbol", "timeframe"], name="uniq_bar_revision_series")
        ]

    def __str__(self) -> str:
        return f"{self.symbol} {self.timeframe} r{self.revision}"


class Calendar(models.TextChoices):
    """When a market trades (training.data.calendars): what annualises its Sharpe ratios."""

    AUTO = "auto", "auto: bars per year as the bars show them"
    CRYPTO = "crypto", "crypto, 24/7"
    FX = "fx", "FX, 24/5"
    XNYS = "xnys", "equities: NYSE / Nasdaq sessions"
    XLON = "xlon", "equities: London Stock Exchange sessions"
    XETR = "xetr", "equities: Xetra sessions"
    XTKS = "xtks", "equities: Tokyo Stock Exchange sessions"


class Symbol(models.Model):
    """A traded symbol's calendar; a symbol without a row is `auto`."""

    symbol = models.CharField(max_length=32, unique=True)
    calendar = models.CharField(max_length=8, choices=Calendar.choices, default=Calendar.AUTO)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["symbol"]

    def __str__(self) -> str:
        return f"{self.symbol} ({self.calendar})"

    def save(self, *args, **kwargs) -> None:
        self.symbol = self.symbol.strip().upper()  # bars are stored under upper-case symbols
        super().save(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Retraining: policies, the record of every trigger, monitor results and scheduler scans.

# Periodic intervals of the original design, in hours; rl_v2 follows rl_v3.
DEFAULT_RETRAIN_INTERVAL_HOURS: dict[str, int] = {
    "xgboost": 168,
    "lightgbm": 168,
    "nhits": 336,
    "patchtst": 336,
    "rl_v2": 24,
    "rl_v3": 24,
    "other": 168,
}


class RetrainPolicy(models.Model):
    """When CLM retrains a model type by itself; one row per type, edited in the admin.

    Manual requests are always accepted (they still join an active job); every automatic trigger
    (periodic, drift, performance, regime) must pass `enabled`, its own switch and threshold, the
    cooldown and the daily budget. Priorities are Celery message priorities (0-9, 9 first).
    """

    model_type = models.CharField(max_length=16, choices=ModelType.choices, unique=True)
    enabled = models.BooleanField(
        default=True, help_text="Automatic retraining of this type (scan and monitors)."
    )
    periodic_interval_hours = models.PositiveIntegerField(
        default=168, help_text="Retrain when the last training is older than this; 0: never."
    )
    auto_train_on_drift = models.BooleanField(default=True)
    drift_threshold = models.FloatField(
        default=0.3,
        help_text="Drift score (share of drifted features, 0-1) at which drift retrains.",
    )
    psi_threshold = models.FloatField(
        default=0.2, help_text="A feature drifts when its PSI is at least this and ..."
    )
    ks_alpha = models.FloatField(
        default=0.01, help_text="... its two-sample KS test's p-value is below this."
    )
    drift_window_bars = models.PositiveIntegerField(
        default=500, help_text="Most recent bars compared with the training window."
    )
    auto_train_on_performance = models.BooleanField(default=True)
    sharpe_threshold = models.FloatField(
        default=0.5, help_text="Live rolling Sharpe below this is degraded performance."
    )
    performance_window_bars = models.PositiveIntegerField(
        default=720, help_text="Bars of the rolling Sharpe."
    )
    auto_train_on_regime_change = models.BooleanField(default=True)
    cooldown_hours = models.FloatField(
        default=6.0, help_text="Minimum time between a model's jobs for automatic triggers."
    )
    max_retrains_per_day = models.PositiveIntegerField(
        default=4, help_text="Jobs per model in any 24 hours beyond which automatic triggers skip."
    )
    priority_manual = models.PositiveSmallIntegerField(default=9)
    priority_performance = models.PositiveSmallIntegerField(default=7)
    priority_drift = models.PositiveSmallIntegerField(default=6)
    priority_regime = models.PositiveSmallIntegerField(default=5)
    priority_periodic = models.PositiveSmallIntegerField(default=3)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "retrain policies"
        ordering = ["model_type"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(drift_threshold__gte=0.0), name="retrain_drift_threshold_nonneg"
            ),
            models.CheckConstraint(
                condition=models.Q(psi_threshold__gt=0.0), name="retrain_psi_threshold_pos"
            ),
            models.CheckConstraint(
                condition=models.Q(ks_alpha__gt=0.0) & models.Q(ks_alpha__lt=1.0),
                name="retrain_ks_alpha_0_1",
            ),
            models.CheckConstraint(
                condition=models.Q(cooldown_hours__gte=0.0), name="retrain_cooldown_nonneg"
            ),
            models.CheckConstraint(
                condition=models.Q(drift_window_bars__gte=50)
                & models.Q(performance_window_bars__gte=50),
                name="retrain_windows_min_50",
            ),
            models.CheckConstraint(
                condition=models.Q(priority_manual__lte=9)
                & models.Q(priority_performance__lte=9)
                & models.Q(priority_drift__lte=9)
                & models.Q(priority_regime__lte=9)
                & models.Q(priority_periodic__lte=9),
                name="retrain_priorities_0_9",
            ),
        ]

    def __str__(self) -> str:
        return f"retraining of {self.model_type}"

    @classmethod
    def default_for(cls, model_type: str) -> RetrainPolicy:
        """The original design's defaults (unsaved): what applies while a type has no row."""
        return cls(
            model_type=model_type,
            periodic_interval_hours=DEFAULT_RETRAIN_INTERVAL_HOURS.get(model_type, 168),
            # "other" has no trainer: nothing to retrain automatically.
            enabled=model_type != ModelType.OTHER,
        )


class TriggerSource(models.TextChoices):
    API = "api"
    BROKER = "broker"
    MONITOR = "monitor"
    SCHEDULER = "scheduler"
    INTERNAL = "internal"


class TriggerOutcome(models.TextChoices):
    CREATED = "created"
    JOINED = "joined"
    SKIPPED = "skipped"
    REJECTED = "rejected"


class TriggerRecord(models.Model):
    """Every trigger CLM received or raised, and what it caused. Append-only.

    `code` is the machine-readable reason of a skip or rejection (cooldown, budget,
    below_threshold, disabled, auto_off, unknown_model, invalid, duplicate), `reason` its sentence.
    """

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    source = models.CharField(max_length=16, choices=TriggerSource.choices)
    event_type = models.CharField(max_length=64, blank=True, help_text="As received.")
    trigger_reason = models.CharField(max_length=32, choices=TriggerReason.choices, blank=True)
    event_id = models.CharField(max_length=64, blank=True, db_index=True)
    model = models.ForeignKey(
        RegisteredModel,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="trigger_records",
    )
    model_key = models.CharField(max_length=120, blank=True, help_text="The model id as given.")
    outcome = models.CharField(max_length=16, choices=TriggerOutcome.choices)
    code = models.CharField(max_length=32, blank=True)
    reason = models.TextField(blank=True)
    priority = models.PositiveSmallIntegerField(default=0)
    job = models.ForeignKey(
        TrainingJob,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="trigger_records",
    )
    payload = models.JSONField(default=dict, blank=True)
    requested_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["model", "created_at"]),
            models.Index(fields=["outcome", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.event_type or '?'} {self.model_key or '-'} {self.outcome}"


class MonitorStatus(models.TextChoices):
    OK = "ok"
    INSUFFICIENT_DATA = "insufficient_data"
    ERROR = "error"


class DriftReport(models.Model):
    """Feature drift of a production version: its training window against the latest bars."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    status = models.CharField(max_length=20, choices=MonitorStatus.choices)
    detail = models.TextField(blank=True)
    reference_start = models.DateTimeField(null=True, blank=True)
    reference_end = models.DateTimeField(null=True, blank=True)
    current_start = models.DateTimeField(null=True, blank=True)
    current_end = models.DateTimeField(null=True, blank=True)
    n_reference = models.PositiveIntegerField(default=0)
    n_current = models.PositiveIntegerField(default=0)
    features = models.JSONField(
        default=dict, blank=True, help_text="Per feature: psi, ks, ks_pvalue, wasserstein, drifted."
    )
    drifted_features = models.JSONField(default=list, blank=True)
    drift_score = models.FloatField(null=True, blank=True, help_text="Share of drifted features.")
    threshold = models.FloatField()
    drifted = models.BooleanField(default=False)
    duration_ms = models.FloatField(default=0.0)
    trigger = models.ForeignKey(
        TriggerRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model", "created_at"])]

    def __str__(self) -> str:
        return f"drift of {self.version} ({self.drift_score})"


class PerformanceReport(models.Model):
    """Live performance of a production version on the bars since its training ended."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    status = models.CharField(max_length=20, choices=MonitorStatus.choices)
    detail = models.TextField(blank=True)
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    n_bars = models.PositiveIntegerField(default=0)
    sharpe = models.FloatField(null=True, blank=True, help_text="Over every bar since training.")
    rolling_sharpe = models.FloatField(null=True, blank=True, help_text="Over the last window.")
    rolling_window = models.PositiveIntegerField(default=0)
    max_drawdown = models.FloatField(null=True, blank=True)
    total_return = models.FloatField(null=True, blank=True)
    trades = models.PositiveIntegerField(default=0)
    exposure = models.FloatField(null=True, blank=True)
    threshold = models.FloatField()
    degraded = models.BooleanField(default=False)
    trigger = models.ForeignKey(
        TriggerRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model", "created_at"])]

    def __str__(self) -> str:
        return f"performance of {self.version} ({self.rolling_sharpe})"


class RegimeState(models.Model):
    """The market regime of one series as the regime monitor classified it, one row per run."""

    symbol = models.CharField(max_length=32)
    timeframe = models.CharField(max_length=4, choices=Timeframe.choices)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    status = models.CharField(max_length=20, choices=MonitorStatus.choices)
    detail = models.TextField(blank=True)
    as_of = models.DateTimeField(null=True, blank=True, help_text="The last bar classified.")
    regime = models.CharField(max_length=64, blank=True, help_text="The confirmed regime.")
    trend = models.CharField(max_length=16, blank=True)
    volatility = models.CharField(max_length=16, blank=True)
    observed = models.CharField(
        max_length=64, blank=True, help_text="The last bar's regime, confirmed or not."
    )
    previous_regime = models.CharField(max_length=64, blank=True)
    changed = models.BooleanField(default=False)
    metrics = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["symbol", "timeframe", "created_at"])]

    def __str__(self) -> str:
        return f"{self.symbol} {self.timeframe} {self.regime or '?'}"


class SchedulerScan(models.Model):
    """One run of the periodic scan: what it looked at and what it queued."""

    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField()
    duration_ms = models.FloatField()
    models_checked = models.PositiveIntegerField()
    due = models.PositiveIntegerField()
    created = models.PositiveIntegerField()
    joined = models.PositiveIntegerField()
    skipped = models.PositiveIntegerField()
    deferred = models.PositiveIntegerField(
        default=0, help_text="Due models left for the next scan (over the per-scan cap)."
    )

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"scan at {self.started_at:%Y-%m-%d %H:%M:%S}: {self.created} queued"


class ScheduledModel(RegisteredModel):
    """Registered models seen as the scheduler sees them (the admin's schedule page)."""

    class Meta:
        proxy = True
        verbose_name = "schedule of a model"
        verbose_name_plural = "schedule"
