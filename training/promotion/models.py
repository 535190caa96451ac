"""Promotion: the gate policy, shadow testing, A/B experiments and automatic rollback.

These tables were created by the registry app (migration registry 0003) and keep their names: the
move to this app was a state-only migration (promotion 0001). The services of this package are
their only writers; every status change of a version still goes through registry.services, so it
has its audit row and its event.
"""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q

from registry.models import ModelType, ModelVersion, RegisteredModel


class PromotionPolicy(models.Model):
    """Promotion gates and evaluation settings for one model type (defaults from METRICS.md)."""

    model_type = models.CharField(max_length=16, choices=ModelType.choices, unique=True)
    min_sharpe = models.FloatField(default=1.0)
    min_win_rate = models.FloatField(default=0.52)
    min_profit_factor = models.FloatField(default=1.3)
    max_drawdown = models.FloatField(default=0.15)
    min_trades = models.PositiveIntegerField(default=50)
    min_dsr = models.FloatField(
        null=True,
        blank=True,
        default=0.95,  # training.promotion.gates.DEFAULT_MIN_DSR
        help_text="Require a deflated Sharpe ratio of at least this (0..1) when the evaluation "
        "has more than one trial; empty: not required.",
    )
    regime_min_bars = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Regime gate: regimes with at least this many bars in the window are judged "
        "(with regime max loss; empty: off).",
    )
    regime_max_loss = models.FloatField(
        null=True,
        blank=True,
        help_text="Regime gate: fail when a judged regime's total return is below minus this "
        "(0.05: loses more than 5 %; empty: off).",
    )
    auto_promote = models.BooleanField(default=True)
    fee = models.FloatField(default=0.0005, help_text="Cost per unit of turnover (5 bps = 0.0005).")
    eval_fraction = models.FloatField(
        default=0.25,
        help_text="Share of the bars after the feature warm-up in the test window (the newest), "
        "where versions are evaluated and gated.",
    )
    validation_fraction = models.FloatField(
        default=0.2,
        help_text="Share of the bars after the feature warm-up in the validation window (just "
        "before the test window), where early stopping, fitness and other selections look.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "registry_promotionpolicy"
        verbose_name_plural = "promotion policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(regime_max_loss__isnull=True)
                | (Q(regime_max_loss__gte=0.0) & Q(regime_max_loss__lte=1.0)),
                name="policy_regime_max_loss_0_1",
            ),
            models.CheckConstraint(
                condition=Q(regime_min_bars__isnull=True, regime_max_loss__isnull=True)
                | Q(regime_min_bars__isnull=False, regime_max_loss__isnull=False),
                name="policy_regime_gate_both_or_neither",
            ),
            models.CheckConstraint(
                condition=Q(eval_fraction__gt=0.0) & Q(eval_fraction__lt=1.0),
                name="policy_eval_fraction_0_1",
            ),
            models.CheckConstraint(
                condition=Q(validation_fraction__gt=0.0)
                & Q(validation_fraction__lt=1.0 - F("eval_fraction")),
                name="policy_validation_fraction_0_1",
            ),
            models.CheckConstraint(condition=Q(fee__gte=0.0), name="policy_fee_nonneg"),
            models.CheckConstraint(
                condition=Q(max_drawdown__gt=0.0) & Q(max_drawdown__lte=1.0),
                name="policy_max_drawdown_0_1",
            ),
        ]

    def __str__(self) -> str:
        return f"gates for {self.model_type}"


class ShadowMode(models.TextChoices):
    OFF = "off", "Off: gate-passing versions are promoted or kept as candidates"
    ALL = "all", "Every gate-passing version shadows production first"
    UNLESS_CLEARLY_BETTER = (
        "unless_clearly_better",
        "Versions that do not clearly beat production shadow it first",
    )


class AlphaSpending(models.TextChoices):
    OBRIEN_FLEMING = "obrien_fleming", "O'Brien-Fleming type (strict early, near-fixed last look)"
    POCOCK = "pocock", "Pocock type (even: a clear winner is promoted sooner)"


class ShadowPolicy(models.Model):
    """When a gate-passing version shadows production, and how long and how strictly it is judged.

    A model type without a row does not shadow (mode off). The design (bars, looks, alpha,
    spending) is copied to each comparison when it starts, so a later edit never changes the rules
    of a comparison under way. The fee is the PromotionPolicy's.
    """

    model_type = models.CharField(max_length=16, choices=ModelType.choices, unique=True)
    mode = models.CharField(
        max_length=24, choices=ShadowMode.choices, default=ShadowMode.UNLESS_CLEARLY_BETTER
    )
    clear_margin = models.FloatField(
        default=0.5,
        help_text="Mode unless_clearly_better: a version whose validation Sharpe beats "
        "production's on the same bars by at least this much skips the shadow period.",
    )
    min_bars = models.PositiveIntegerField(
        default=500, help_text="Bars of the shadow period before the first decision."
    )
    min_trades = models.PositiveIntegerField(
        default=10, help_text="Trades the shadow version must have made before a decision."
    )
    max_bars = models.PositiveIntegerField(
        default=3000, help_text="At this many bars the last decision is taken: promote or retire."
    )
    looks = models.PositiveSmallIntegerField(
        default=4, help_text="Decisions spread evenly from min_bars to max_bars."
    )
    alpha = models.FloatField(
        default=0.05,
        help_text="Chance of promoting a version that is not better, over all looks together.",
    )
    spending = models.CharField(
        max_length=16, choices=AlphaSpending.choices, default=AlphaSpending.OBRIEN_FLEMING
    )
    auto_promote = models.BooleanField(
        default=True,
        help_text="Promote a version that proves better (also needs the promotion policy's "
        "auto-promotion and CLM_AUTO_PROMOTE); otherwise it goes back to candidate, marked ready.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "registry_shadowpolicy"
        verbose_name_plural = "shadow policies"
        ordering = ["model_type"]
        constraints = [
            models.CheckConstraint(condition=Q(min_bars__gte=20), name="shadow_min_bars_20"),
            models.CheckConstraint(
                condition=Q(max_bars__gte=models.F("min_bars")), name="shadow_max_ge_min_bars"
            ),
            models.CheckConstraint(
                condition=Q(looks__gte=1) & Q(looks__lte=20), name="shadow_looks_1_20"
            ),
            models.CheckConstraint(
                condition=Q(alpha__gt=0.0) & Q(alpha__lt=0.5), name="shadow_alpha_0_half"
            ),
            models.CheckConstraint(
                condition=Q(clear_margin__gte=0.0), name="shadow_clear_margin_nonneg"
            ),
        ]

    def __str__(self) -> str:
        return f"shadowing of {self.model_type} ({self.mode})"

    @classmethod
    def default_for(cls, model_type: str) -> ShadowPolicy:
        """What applies while a type has no row (unsaved): no shadowing, design defaults."""
        return cls(model_type=model_type, mode=ShadowMode.OFF)


class ComparisonStatus(models.TextChoices):
    ACTIVE = "active"
    COMPLETED = "completed"
    STOPPED = "stopped"


class ShadowDecision(models.TextChoices):
    CONTINUE = "continue", "Keep shadowing"
    PROMOTE = "promote", "Proved better: promoted"
    READY = "ready", "Proved better: auto-promotion off, back to candidate"
    RETIRE = "retire", "Not proved better by the maximum duration: retired"
    STOPPED = "stopped", "Stopped"
    SUPERSEDED = "superseded", "Production changed: to be compared afresh"


class ShadowComparison(models.Model):
    """A shadow version paper-traded beside one production version on the bars after `start_after`.

    The per-bar return series are stored in the observations (one chunk per evaluation step); the
    latest test is copied here for lists.
    """

    model = models.ForeignKey(
        RegisteredModel, on_delete=models.PROTECT, related_name="shadow_comparisons"
    )
    shadow = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="shadow_comparisons"
    )
    production = models.ForeignKey(
        ModelVersion,
        on_delete=models.PROTECT,
        related_name="shadowed_by",
        help_text="The production version when the comparison started: its baseline.",
    )
    status = models.CharField(
        max_length=16, choices=ComparisonStatus.choices, default=ComparisonStatus.ACTIVE
    )
    decision = models.CharField(max_length=16, choices=ShadowDecision.choices, blank=True)
    reason = models.TextField(blank=True)
    started_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    start_after = models.DateTimeField(help_text="Bars after this one make the shadow period.")
    # The design, fixed when the comparison starts.
    fee = models.FloatField()
    periods_per_year = models.PositiveIntegerField()
    min_bars = models.PositiveIntegerField()
    min_trades = models.PositiveIntegerField()
    max_bars = models.PositiveIntegerField()
    looks = models.PositiveSmallIntegerField()
    alpha = models.FloatField()
    spending = models.CharField(max_length=16, choices=AlphaSpending.choices)
    auto_promote = models.BooleanField(default=True)
    # Progress and the latest test.
    looks_done = models.PositiveSmallIntegerField(default=0)
    n_bars = models.PositiveIntegerField(default=0)
    last_bar_at = models.DateTimeField(null=True, blank=True)
    shadow_trades = models.PositiveIntegerField(default=0)
    production_trades = models.PositiveIntegerField(default=0)
    estimate = models.FloatField(
        null=True, blank=True, help_text="Mean per-bar return of shadow minus production."
    )
    statistic = models.FloatField(null=True, blank=True)
    p_value = models.FloatField(null=True, blank=True)
    ci_low = models.FloatField(null=True, blank=True)
    ci_high = models.FloatField(null=True, blank=True)
    shadow_sharpe = models.FloatField(null=True, blank=True)
    production_sharpe = models.FloatField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        db_table = "registry_shadowcomparison"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model", "created_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["shadow"],
                condition=Q(status="active"),
                name="one_active_comparison_per_version",
            ),
            models.CheckConstraint(
                condition=Q(max_bars__gte=models.F("min_bars")) & Q(min_bars__gte=2),
                name="comparison_bars_range",
            ),
            models.CheckConstraint(
                condition=Q(alpha__gt=0.0) & Q(alpha__lt=0.5), name="comparison_alpha_0_half"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.shadow} shadowing v{self.production.version} ({self.status})"


class ShadowObservation(models.Model):
    """One evaluation step: the new bars' returns of both models and the test on the series so far.

    `bar_times` (int64 Unix seconds), `shadow_returns` and `production_returns` (float64) are
    little-endian arrays of the step's new bars; the comparison's series is their concatenation
    in step order.
    """

    comparison = models.ForeignKey(
        ShadowComparison, on_delete=models.CASCADE, related_name="observations"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    first_bar_at = models.DateTimeField(null=True, blank=True)
    last_bar_at = models.DateTimeField(null=True, blank=True)
    n_new = models.PositiveIntegerField()
    n_bars = models.PositiveIntegerField(help_text="Bars in the series after this step.")
    bar_times = models.BinaryField()
    shadow_returns = models.BinaryField()
    production_returns = models.BinaryField()
    shadow_trades = models.PositiveIntegerField(default=0)
    production_trades = models.PositiveIntegerField(default=0)
    look = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The planned look decided at this step (1-based)."
    )
    tested_bars = models.PositiveIntegerField(default=0)
    estimate = models.FloatField(null=True, blank=True)
    se = models.FloatField(null=True, blank=True)
    statistic = models.FloatField(null=True, blank=True)
    p_value = models.FloatField(null=True, blank=True)
    ci_low = models.FloatField(null=True, blank=True)
    ci_high = models.FloatField(null=True, blank=True)
    boundary = models.FloatField(null=True, blank=True)
    shadow_sharpe = models.FloatField(null=True, blank=True)
    production_sharpe = models.FloatField(null=True, blank=True)
    decision = models.CharField(max_length=16, choices=ShadowDecision.choices)
    reason = models.TextField(blank=True)

    class Meta:
        db_table = "registry_shadowobservation"
        ordering = ["comparison", "id"]

    def __str__(self) -> str:
        return f"step of {self.comparison_id} at {self.n_bars} bars: {self.decision}"


class ExperimentStatus(models.TextChoices):
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"


class ExperimentMetric(models.TextChoices):
    SHARPE = "sharpe", "Sharpe ratio (Ledoit-Wolf HAC test of the difference)"
    MEAN_RETURN = "mean_return", "Mean per-bar return (Diebold-Mariano HAC test)"


class StoppingRule(models.TextChoices):
    FIXED_HORIZON = "fixed_horizon", "One decision at min_bars"
    GROUP_SEQUENTIAL = "group_sequential", "Decisions at `looks` points from min_bars to max_bars"


class ReturnSource(models.TextChoices):
    REPORTED = "reported", "Reported by trading services"
    COMPUTED = "computed", "Computed by CLM from bars"


class ExperimentDecision(models.TextChoices):
    PROMOTE = "promote", "A candidate won and was promoted"
    WINNER = "winner", "A candidate won; auto-promotion is off"
    KEEP_PRODUCTION = "keep_production", "No candidate proved better: production stays"
    STOPPED = "stopped", "Stopped"


class Experiment(models.Model):
    """An A/B test: capital split between production and candidates of the same model."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="experiments")
    status = models.CharField(
        max_length=16, choices=ExperimentStatus.choices, default=ExperimentStatus.RUNNING
    )
    description = models.TextField(blank=True)
    metric = models.CharField(
        max_length=16, choices=ExperimentMetric.choices, default=ExperimentMetric.SHARPE
    )
    stopping_rule = models.CharField(
        max_length=20, choices=StoppingRule.choices, default=StoppingRule.GROUP_SEQUENTIAL
    )
    returns_source = models.CharField(
        max_length=16, choices=ReturnSource.choices, default=ReturnSource.REPORTED
    )
    min_bars = models.PositiveIntegerField(help_text="Minimum duration, in bars.")
    max_bars = models.PositiveIntegerField(help_text="Maximum duration (group sequential).")
    looks = models.PositiveSmallIntegerField(default=4)
    alpha = models.FloatField(default=0.05)
    spending = models.CharField(
        max_length=16, choices=AlphaSpending.choices, default=AlphaSpending.OBRIEN_FLEMING
    )
    auto_promote = models.BooleanField(default=True)
    fee = models.FloatField()
    periods_per_year = models.PositiveIntegerField()
    start_after = models.DateTimeField(help_text="Bars after this one count.")
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    looks_done = models.PositiveSmallIntegerField(default=0)
    n_bars = models.PositiveIntegerField(default=0, help_text="Bars with a return for every arm.")
    decision = models.CharField(max_length=16, choices=ExperimentDecision.choices, blank=True)
    reason = models.TextField(blank=True)
    winner = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="experiments_won",
    )
    estimate = models.FloatField(
        null=True, blank=True, help_text="Best candidate minus production, in the metric."
    )
    statistic = models.FloatField(null=True, blank=True)
    p_value = models.FloatField(null=True, blank=True)
    ci_low = models.FloatField(null=True, blank=True)
    ci_high = models.FloatField(null=True, blank=True)

    class Meta:
        db_table = "registry_experiment"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model", "created_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["model"],
                condition=Q(status="running"),
                name="one_running_experiment_per_model",
            ),
            models.CheckConstraint(
                condition=Q(max_bars__gte=models.F("min_bars")) & Q(min_bars__gte=2),
                name="experiment_bars_range",
            ),
            models.CheckConstraint(
                condition=Q(alpha__gt=0.0) & Q(alpha__lt=0.5), name="experiment_alpha_0_half"
            ),
        ]

    def __str__(self) -> str:
        return f"experiment {self.pk} on {self.model} ({self.status})"


class ArmRole(models.TextChoices):
    CONTROL = "control", "Production (control)"
    CANDIDATE = "candidate"


class ExperimentArm(models.Model):
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="arms")
    version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="experiment_arms"
    )
    role = models.CharField(max_length=16, choices=ArmRole.choices)
    weight = models.FloatField(help_text="Share of the model's capital, in (0, 1].")
    n_bars = models.PositiveIntegerField(default=0)
    mean_return = models.FloatField(null=True, blank=True)
    sharpe = models.FloatField(null=True, blank=True)

    class Meta:
        db_table = "registry_experimentarm"
        ordering = ["experiment", "-role", "version__version"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "version"], name="uniq_experiment_arm"),
            models.UniqueConstraint(
                fields=["experiment"],
                condition=Q(role="control"),
                name="one_control_arm_per_experiment",
            ),
            models.CheckConstraint(
                condition=Q(weight__gt=0.0) & Q(weight__lte=1.0), name="arm_weight_0_1"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.version} {self.role} {self.weight:.0%}"


class ExperimentEvaluation(models.Model):
    """One evaluation step of an experiment: each candidate's test against production."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="evaluations")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    n_bars = models.PositiveIntegerField()
    look = models.PositiveSmallIntegerField(null=True, blank=True)
    tested_bars = models.PositiveIntegerField(default=0)
    results = models.JSONField(
        default=list,
        blank=True,
        help_text="Per candidate: version, estimate, se, statistic, p_value, ci_low, ci_high, "
        "critical, rejects.",
    )
    decision = models.CharField(max_length=16, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        db_table = "registry_experimentevaluation"
        ordering = ["experiment", "id"]

    def __str__(self) -> str:
        return f"step of experiment {self.experiment_id} at {self.n_bars} bars"


class RealisedReturn(models.Model):
    """A version's return on one bar, as a fraction of the capital it traded.

    Reported by a trading service (POST /clm/models/{model_id}/results; one per version and bar)
    or computed by CLM from the bars for an experiment whose returns come from bars (one per
    experiment, version and bar).
    """

    version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="realised_returns"
    )
    experiment = models.ForeignKey(
        Experiment,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="realised_returns",
    )
    source = models.CharField(max_length=16, choices=ReturnSource.choices)
    timestamp = models.DateTimeField(help_text="The bar the return was earned on.")
    value = models.FloatField()
    recorded_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "registry_realisedreturn"
        ordering = ["version", "timestamp"]
        indexes = [models.Index(fields=["version", "source", "timestamp"])]
        constraints = [
            # A reported return is a fact about the version and the bar, whichever experiment
            # was running; a computed one belongs to its experiment (the window starts there).
            models.UniqueConstraint(
                fields=["version", "timestamp"],
                condition=Q(source="reported"),
                name="uniq_reported_return",
            ),
            models.UniqueConstraint(
                fields=["experiment", "version", "timestamp"],
                condition=Q(source="computed"),
                name="uniq_computed_return",
            ),
            models.CheckConstraint(
                condition=Q(source="reported") | Q(experiment__isnull=False),
                name="computed_return_has_experiment",
            ),
            models.CheckConstraint(condition=Q(value__gte=-1.0), name="realised_return_ge_m1"),
        ]

    def __str__(self) -> str:
        return f"{self.version} {self.timestamp:%Y-%m-%d %H:%M} {self.value:+.5f}"


class RollbackPolicy(models.Model):
    """Limits on production's live results; a breach rolls back to the previous valid version.

    A model type without a row gets these defaults (enabled).
    """

    model_type = models.CharField(max_length=16, choices=ModelType.choices, unique=True)
    enabled = models.BooleanField(default=True)
    max_drawdown = models.FloatField(
        default=0.25, help_text="Roll back when the drawdown within the window exceeds this."
    )
    min_rolling_sharpe = models.FloatField(
        default=-1.0, help_text="Roll back when the window's annualized Sharpe is below this."
    )
    window_bars = models.PositiveIntegerField(
        default=720, help_text="The live window N: the last N bars of production's results."
    )
    cooldown_hours = models.FloatField(
        default=24.0, help_text="At most one automatic rollback per model in this time."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "registry_rollbackpolicy"
        verbose_name_plural = "rollback policies"
        ordering = ["model_type"]
        constraints = [
            models.CheckConstraint(
                condition=Q(max_drawdown__gt=0.0) & Q(max_drawdown__lte=1.0),
                name="rollback_max_drawdown_0_1",
            ),
            models.CheckConstraint(condition=Q(window_bars__gte=20), name="rollback_window_20"),
            models.CheckConstraint(
                condition=Q(cooldown_hours__gte=0.0), name="rollback_cooldown_nonneg"
            ),
        ]

    def __str__(self) -> str:
        return f"automatic rollback of {self.model_type}"

    @classmethod
    def default_for(cls, model_type: str) -> RollbackPolicy:
        return cls(model_type=model_type)


class RollbackOutcome(models.TextChoices):
    ROLLED_BACK = "rolled_back"
    COOLDOWN = "cooldown", "Breach during the cooldown: no rollback"
    NO_VALID_TARGET = "no_valid_target", "Breach, but no earlier version is valid"


class RollbackDecision(models.Model):
    """What CLM decided when production breached its limits. Append-only."""

    model = models.ForeignKey(
        RegisteredModel, on_delete=models.PROTECT, related_name="rollback_decisions"
    )
    from_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="rollbacks_from"
    )
    to_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="rollbacks_to",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    outcome = models.CharField(max_length=16, choices=RollbackOutcome.choices)
    source = models.CharField(max_length=16, choices=ReturnSource.choices)
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    n_bars = models.PositiveIntegerField()
    drawdown = models.FloatField()
    rolling_sharpe = models.FloatField()
    breaches = models.JSONField(default=list, help_text="Each limit broken: value and threshold.")
    skipped = models.JSONField(
        default=list, blank=True, help_text="Earlier versions passed over, and why."
    )
    reason = models.TextField()

    class Meta:
        db_table = "registry_rollbackdecision"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model", "created_at"])]

    def __str__(self) -> str:
        return f"{self.from_version} {self.outcome}"
