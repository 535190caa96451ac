"""Evolution in the admin: runs with each generation's front picture, candidates with metrics and
lineage. Everything is read-only; the actions (stop, resume, select) call the services."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from clm_project.exceptions import DomainError
from evolution import selectors, services
from evolution.models import EvolutionRun, Generation, StrategyCandidate
from registry import display

RUN_EVOLUTION = "evolution.run_evolution"
SHOWN_METRICS = (
    "sharpe", "sortino", "max_drawdown", "total_return", "cagr", "calmar", "exposure", "trades",
    "win_rate", "profit_factor", "avg_trade_return", "avg_bars_held", "psr",
)  # fmt: skip


class ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _candidate_link(candidate_id: Any, label: str | None = None) -> str:
    url = reverse("admin:evolution_strategycandidate_change", args=[candidate_id])
    return format_html('<a href="{}">{}</a>', url, label or str(candidate_id)[:8])


def _front_img(generation: Generation, *, width: int = 480) -> str:
    url = reverse(
        "clm-evolution-front",
        kwargs={"run_id": generation.run_id, "number": generation.number, "fmt": "png"},
    )
    return format_html(
        '<a href="{}"><img src="{}" width="{}" alt="Pareto front of generation {}" '
        'loading="lazy"></a>',
        url, url, width, generation.number,
    )  # fmt: skip


class GenerationInline(ReadOnlyMixin, admin.TabularInline):
    model = Generation
    extra = 0
    can_delete = False
    fields = (
        "number", "status", "hypervolume_shown", "n_evaluated", "n_failed", "front_size",
        "search_seconds", "evaluation_seconds", "completed_at", "front_picture",
    )  # fmt: skip
    readonly_fields = fields
    ordering = ("number",)

    @admin.display(description="hypervolume")
    def hypervolume_shown(self, obj: Generation) -> str:
        return display.significant(obj.hypervolume)

    @admin.display(description="front")
    def front_size(self, obj: Generation) -> int:
        return len(obj.front or [])

    @admin.display(description="Pareto front (Sharpe, drawdown, profit factor)")
    def front_picture(self, obj: Generation) -> str:
        return _front_img(obj)


@admin.register(EvolutionRun)
class EvolutionRunAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "short_id", "model_type", "symbol", "timeframe", "status", "progress",
        "population_size", "latest_hypervolume", "requested_by", "created_at",
    )  # fmt: skip
    list_filter = ("status", "model_type", "timeframe")
    search_fields = ("id", "symbol", "requested_by")
    date_hierarchy = "created_at"
    inlines = (GenerationInline,)
    actions = ("stop_selected", "resume_selected")
    readonly_fields = ("search_space_pretty", "latest_front")
    exclude = ("search_space",)

    @admin.display(description="run", ordering="id")
    def short_id(self, obj: EvolutionRun) -> str:
        return str(obj.id)[:8]

    @admin.display(description="generation")
    def progress(self, obj: EvolutionRun) -> str:
        return f"{obj.current_generation} / {obj.generations}"

    @admin.display(description="hypervolume")
    def latest_hypervolume(self, obj: EvolutionRun) -> str:
        latest = obj.generation_set.exclude(hypervolume=None).order_by("-number").first()
        return "-" if latest is None else display.significant(latest.hypervolume)

    @admin.display(description="search space")
    def search_space_pretty(self, obj: EvolutionRun) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.search_space, indent=2))

    @admin.display(description="latest Pareto front")
    def latest_front(self, obj: EvolutionRun) -> str:
        latest = obj.generation_set.order_by("-number").first()
        return "-" if latest is None else _front_img(latest, width=640)

    def has_run_evolution_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_EVOLUTION)

    @admin.action(description="Stop selected runs", permissions=["run_evolution"])
    def stop_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        for run in queryset:
            self._call(request, services.evolution_run_stop, run, "stopped")

    @admin.action(description="Resume selected runs", permissions=["run_evolution"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        for run in queryset:
            self._call(request, services.evolution_run_resume, run, "resumed")

    def _call(self, request: HttpRequest, service: Any, run: EvolutionRun, done: str) -> None:
        try:
            service(run_id=run.pk, actor=request.user.get_username())
        except DomainError as exc:
            self.message_user(request, exc.message, messages.WARNING)
        else:
            self.message_user(request, f"Run {run} {done}.", messages.SUCCESS)


@admin.register(StrategyCandidate)
class StrategyCandidateAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "short_id", "base_strategy", "origin", "status", "evaluation_status", "generation_no",
        "sharpe", "max_drawdown", "trades", "fitness", "created_at",
    )  # fmt: skip
    list_filter = ("status", "origin", "evaluation_status", "model_type", "timeframe")
    search_fields = ("id", "base_strategy", "symbol", "mutation_description")
    date_hierarchy = "created_at"
    list_select_related = ("generation",)
    actions = ("select_for_production",)
    exclude = ("oos_returns", "parents", "metrics", "params", "genome", "objectives")
    readonly_fields = ("metrics_table", "params_pretty", "objectives_pretty", "lineage")

    def get_queryset(self, request: HttpRequest) -> QuerySet[StrategyCandidate]:
        return super().get_queryset(request).defer("oos_returns")

    @admin.display(description="candidate", ordering="id")
    def short_id(self, obj: StrategyCandidate) -> str:
        return str(obj.id)[:8]

    @admin.display(description="generation", ordering="generation__number")
    def generation_no(self, obj: StrategyCandidate) -> Any:
        return obj.generation.number if obj.generation is not None else "-"

    @admin.display(description="Sharpe")
    def sharpe(self, obj: StrategyCandidate) -> str:
        return display.metric("sharpe", obj.metrics.get("sharpe"))

    @admin.display(description="max drawdown")
    def max_drawdown(self, obj: StrategyCandidate) -> str:
        return display.metric("max_drawdown", obj.metrics.get("max_drawdown"))

    @admin.display(description="trades")
    def trades(self, obj: StrategyCandidate) -> Any:
        return obj.metrics.get("trades", "-")

    @admin.display(description="metrics (out of sample)")
    def metrics_table(self, obj: StrategyCandidate) -> str:
        infinite = bool(obj.metrics.get("profit_factor_infinite"))
        rows = [
            (display.metric_label(name),
             display.metric(name, obj.metrics.get(name),
                            infinite=infinite and name == "profit_factor"))
            for name in SHOWN_METRICS
            if name in obj.metrics or (infinite and name == "profit_factor")
        ]  # fmt: skip
        if not rows:
            return "-"
        return format_html(
            "<table>{}</table>", format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
        )

    @admin.display(description="params")
    def params_pretty(self, obj: StrategyCandidate) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.params, indent=2))

    @admin.display(description="objectives")
    def objectives_pretty(self, obj: StrategyCandidate) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.objectives, indent=2))

    @admin.display(description="lineage")
    def lineage(self, obj: StrategyCandidate) -> str:
        found = selectors.candidate_lineage(candidate=obj, depth=3)
        parents = selectors.candidate_parent_ids(candidate=obj)
        ancestors = format_html_join(
            mark_safe("<br>"),
            "{} {} (depth {}, {})",
            ((_candidate_link(c.pk), c.origin, depth, _gen(c)) for c, depth, _ in found.ancestors),
        )
        children = format_html_join(
            mark_safe("<br>"),
            "{} {} ({})",
            ((_candidate_link(c.pk), c.origin, _gen(c)) for c in found.children),
        )
        return format_html(
            "<b>parents</b>: {}<br><b>ancestors</b>:<br>{}<br><b>children</b>:<br>{}",
            format_html_join(", ", "{}", ((_candidate_link(p),) for p in parents)) or "none",
            ancestors or "none",
            children or "none",
        )

    def has_run_evolution_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_EVOLUTION)

    @admin.action(description="Select for production (training job)", permissions=["run_evolution"])
    def select_for_production(self, request: HttpRequest, queryset: QuerySet) -> None:
        for candidate in queryset:
            try:
                _, job = services.candidate_select(
                    candidate_id=candidate.pk,
                    actor=request.user.get_username(),
                    reason="selected in the admin",
                )
            except DomainError as exc:
                self.message_user(request, exc.message, messages.WARNING)
            else:
                self.message_user(
                    request, f"Candidate {candidate} sent to training: job {job.pk}.",
                    messages.SUCCESS,
                )  # fmt: skip


def _gen(candidate: StrategyCandidate) -> str:
    return f"generation {candidate.generation.number}" if candidate.generation else "no run"
