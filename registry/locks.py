"""Row locks: the one way a writer locks a model line, and the order locks are taken in.

Lock order (every transaction that writes a model line's rows follows it, so two writers never
wait on each other in a cycle and deadlock):

1. the RegisteredModel row of the model line (`model_lock`): taken first, by every writer of a
   line's versions, jobs, shadow comparisons, experiments, rollbacks and triggers;
2. then the rows of that line the writer changes: a version, a job, a comparison, an experiment
   (`row_lock_under_model` takes 1 and then 2 for a row that belongs to a model line);
3. then rows below those (observations, realised returns, candidates of an evolution run).

A writer that needs no model line (a job's progress, the outbox relay) locks only its own row.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.db import models

from clm_project.compiled import CompiledQuery
from clm_project.exceptions import NotFound
from registry.models import RegisteredModel

Row = TypeVar("Row", bound=models.Model)

# Every writer of a model line takes this lock first: compiled once per process.
_LOCK_BY_MODEL_ID = CompiledQuery(
    lambda model_id: RegisteredModel.objects.select_for_update().filter(model_id=model_id),
    model_id=str,
)
_LOCK_BY_PK = CompiledQuery(
    lambda pk: RegisteredModel.objects.select_for_update().filter(pk=pk), pk=int
)


def model_lock(*, model_id: str | None = None, pk: int | None = None) -> RegisteredModel:
    """Lock one model line's row (by its model_id or primary key) inside the caller's
    transaction; NotFound if there is no such line."""
    if model_id is not None:
        model = _LOCK_BY_MODEL_ID.first(model_id=model_id)
    else:
        model = _LOCK_BY_PK.first(pk=pk)
    if model is None:
        raise NotFound(f"unknown model {model_id if model_id is not None else pk!r}")
    return model


def row_lock_under_model(
    rows: models.QuerySet[Row], pk: Any, *, what: str, related: tuple[str, ...] = ("model",)
) -> Row:
    """Lock the model line a row belongs to (its `model` foreign key), then the row itself, in the
    order above; `what` names the row in the NotFound message."""
    model_pk = rows.filter(pk=pk).values_list("model_id", flat=True).first()
    if model_pk is None:
        raise NotFound(f"unknown {what} {pk}")
    model_lock(pk=model_pk)
    return rows.select_for_update(of=("self",)).select_related(*related).get(pk=pk)
