"""Strategy candidates and the evolution runs that breed them, generation by generation.

Only `evolution.services` writes these tables. A run's generations and their candidates are the
whole state of a search: the NSGA-II algorithm is rebuilt from them (see `evolution.nsga.replay`),
which is what lets a run resume after a crash.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from registry.models import ModelType, Timeframe


class CandidateOrigin(models.TextChoices):
    MANUAL = "manual"
    MUTATION = "mutation"
    CROSSOVER = "crossover"
    RANDOM = "random"
    REGIME_ADAPTATION = "regime_adaptation"


class CandidateStatus(models.TextChoices):
    """Where a candidate stands on its way to production (the original design's StrategyStatus)."""

    PROPOSED = "proposed"
    TRAINING = "training"
    SHADOW = "shadow"
    ACTIVE = "active"
    RETIRED = "retired"
    FAILED = "failed"


class EvaluationStatus(models.TextChoices):
    """The fitness evaluation (train + out-of-sample backtest) of a candidate."""

    PENDING = "pending"
    RUNNING = "running"
    EVALUATED = "evaluated"
    FAILED = "failed"


FINISHED_EVALUATION = (EvaluationStatus.EVALUATED, EvaluationStatus.FAILED)


class RunStatus(models.TextChoices):
    RUNNING = "running"
    STOPPED = "stopped"
    COMPLETED = "completed"
    FAILED = "failed"


class GenerationStatus(models.TextChoices):
    EVALUATING = "evaluating"
    COMPLETE = "complete"


class EvolutionRun(models.Model):
    """One NSGA-II search for a model type on one symbol and timeframe, with its settings."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model_type = models.CharField(max_length=16, choices=ModelType.choices)
    symbol = models.CharField(max_length=32)
    timeframe = models.CharField(max_length=4, choices=Timeframe.choices)
    population_size = models.PositiveIntegerField()
    generations = models.PositiveIntegerField(help_text="How many generations the run breeds.")
    seed = models.PositiveIntegerField(default=0)
    min_trades = models.PositiveIntegerField(help_text="Constraint: fewer trades is infeasible.")
    search_space = models.JSONField(help_text="The resolved search space (genes and fixed params).")
    # Evaluation settings, fixed at the start so every candidate of the run is scored alike.
    fee = models.FloatField()
    eval_fraction = models.FloatField(help_text="Share of the bars in the test window.")
    validation_fraction = models.FloatField(
        default=0.2,
        help_text="Share of the bars in the validation window, where fitness is measured.",
    )
    window_start = models.DateTimeField()
    window_end = models.DateTimeField(help_text="Exclusive: bars before this instant.")
    n_bars = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.RUNNING)
    current_generation = models.PositiveIntegerField(default=0)
    error_message = models.TextField(blank=True)
    requested_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("run_evolution", "Can start, stop and resume evolution runs and select candidates")
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(population_size__gte=4) & Q(population_size__lte=512),
                name="run_population_4_512",
            ),
            models.CheckConstraint(
                condition=Q(generations__gte=1) & Q(generations__lte=500),
                name="run_generations_1_500",
            ),
            models.CheckConstraint(
                condition=Q(current_generation__lte=models.F("generations")),
                name="run_generation_within_budget",
            ),
            models.CheckConstraint(
                condition=Q(eval_fraction__gt=0.0) & Q(eval_fraction__lt=1.0),
                name="run_eval_fraction_0_1",
            ),
            models.CheckConstraint(
                condition=Q(validation_fraction__gt=0.0)
                & Q(validation_fraction__lt=1.0 - models.F("eval_fraction")),
                name="run_validation_fraction_0_1",
            ),
            models.CheckConstraint(condition=Q(fee__gte=0.0), name="run_fee_nonneg"),
            models.CheckConstraint(
                condition=Q(window_start__lt=models.F("window_end")), name="run_window_ordered"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_type} {self.symbol} {self.timeframe} ({str(self.id)[:8]})"


class Generation(models.Model):
    """One generation of a run: its candidates, then, once all are scored, its Pareto front."""

    run = models.ForeignKey(EvolutionRun, on_delete=models.CASCADE, related_name="generation_set")
    number = models.PositiveIntegerField()
    status = models.CharField(
        max_length=16, choices=GenerationStatus.choices, default=GenerationStatus.EVALUATING
    )
    front = models.JSONField(
        default=list,
        blank=True,
        help_text="Non-dominated feasible members of the population after this generation.",
    )
    hypervolume = models.FloatField(null=True, blank=True)
    n_evaluated = models.PositiveIntegerField(default=0)
    n_failed = models.PositiveIntegerField(default=0)
    # Where the time went: the search's own work (ask/tell and its database writes) against the
    # candidates' training and backtests (summed over candidates, not wall time).
    search_seconds = models.FloatField(default=0.0)
    evaluation_seconds = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="uniq_run_generation"),
            models.CheckConstraint(condition=Q(number__gte=1), name="generation_number_from_1"),
        ]

    def __str__(self) -> str:
        return f"generation {self.number} of {self.run}"


class StrategyCandidate(models.Model):
    """A strategy genome: model type and params, where it came from, and how it scored."""

    # Set on the rows of a top-candidates read (its NSGA-II standing), never stored.
    rank: int | None
    crowding: float | None

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    base_strategy = models.CharField(
        max_length=120, help_text="The model line it would train into (registry model id)."
    )
    model_type = models.CharField(max_length=16, choices=ModelType.choices)
    symbol = models.CharField(max_length=32)
    timeframe = models.CharField(max_length=4, choices=Timeframe.choices)
    params = models.JSONField(help_text="Training-job params: trainer params and `features`.")
    genome = models.JSONField(default=list, blank=True, help_text="Encoded in the search space.")
    origin = models.CharField(max_length=20, choices=CandidateOrigin.choices)
    parents = models.ManyToManyField("self", symmetrical=False, related_name="children", blank=True)
    mutation_description = models.TextField(blank=True)
    status = models.CharField(
        max_length=16, choices=CandidateStatus.choices, default=CandidateStatus.PROPOSED
    )
    run = models.ForeignKey(
        EvolutionRun, null=True, blank=True, on_delete=models.CASCADE, related_name="candidates"
    )
    generation = models.ForeignKey(
        Generation, null=True, blank=True, on_delete=models.CASCADE, related_name="candidates"
    )
    index = models.PositiveIntegerField(
        null=True, blank=True, help_text="Position in its generation."
    )
    # Fitness evaluation: claimed with a compare-and-set, finished only by the claim's holder.
    evaluation_status = models.CharField(
        max_length=16, choices=EvaluationStatus.choices, default=EvaluationStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    claimed_at = models.DateTimeField(null=True, blank=True)
    evaluated_at = models.DateTimeField(null=True, blank=True)
    evaluation_seconds = models.FloatField(null=True, blank=True)
    task_seconds = models.FloatField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="METRICS.md names.")
    training_metrics = models.JSONField(default=dict, blank=True)
    objectives = models.JSONField(
        default=dict, blank=True, help_text="sharpe, profit_factor, max_drawdown, trades, F, G."
    )
    feasible = models.BooleanField(null=True, blank=True)
    pareto_rank = models.PositiveIntegerField(null=True, blank=True)
    crowding_distance = models.FloatField(null=True, blank=True)
    fitness = models.FloatField(
        null=True,
        blank=True,
        help_text="NSGA-II crowded comparison as one number: -rank + crowding/(1 + crowding).",
    )
    oos_returns = models.BinaryField(null=True, blank=True, editable=False)
    # Selection for production.
    dsr = models.FloatField(null=True, blank=True, help_text="Deflated Sharpe at selection.")
    dsr_trials = models.PositiveIntegerField(null=True, blank=True)
    training_job = models.ForeignKey(
        "registry.TrainingJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="strategy_candidates",
    )
    produced_version = models.ForeignKey(
        "registry.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="strategy_candidates",
    )
    selected_by = models.CharField(max_length=150, blank=True)
    selected_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "index"]
        indexes = [
            models.Index(fields=["symbol", "timeframe", "evaluation_status"]),
            models.Index(fields=["run", "evaluation_status"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["generation", "index"],
                condition=Q(generation__isnull=False),
                name="uniq_generation_index",
            ),
            models.CheckConstraint(
                condition=Q(run__isnull=True, generation__isnull=True, index__isnull=True)
                | Q(run__isnull=False, generation__isnull=False, index__isnull=False),
                name="candidate_run_generation_together",
            ),
            models.CheckConstraint(
                condition=~Q(evaluation_status="running") | Q(claim_token__isnull=False),
                name="candidate_running_has_claim",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.base_strategy} {self.origin} {str(self.id)[:8]}"

    @property
    def generation_number(self) -> int | None:
        return self.generation.number if self.generation is not None else None
