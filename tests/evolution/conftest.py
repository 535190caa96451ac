"""Evolution fixtures: a small market, small search budgets, users with the evolution right."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from evolution import services
from evolution.models import EvolutionRun
from tests.training.conftest import store_bars

SYMBOL = "EVOUSDT"
N_BARS = 2_000
# Cheap candidates: a handful of small trees, one thread, no early stopping.
SMALL_SPACE = {
    "n_estimators": {"low": 10, "high": 30},
    "max_depth": {"low": 2, "high": 4},
    "early_stopping_rounds": 0,
    "calibration": {"choices": ["none", "platt"]},
}


@pytest.fixture
def evo_bars(db) -> str:
    """2,000 1h bars of a synthetic EVOUSDT."""
    store_bars(SYMBOL, N_BARS, seed=7)
    return SYMBOL


def run_add(**overrides) -> EvolutionRun:
    """A small run on EVOUSDT (dispatched only with `dispatch=True`); the bars must exist."""
    dispatch = overrides.pop("dispatch", False)
    settings = {
        "model_type": "xgboost",
        "symbol": SYMBOL,
        "timeframe": "1h",
        "population_size": 6,
        "generations": 2,
        "seed": 3,
        "min_trades": 5,
        "search_space": SMALL_SPACE,
        **overrides,
    }
    return services.evolution_run_create(request=services.RunRequest(**settings), dispatch=dispatch)


@pytest.fixture
def make_run(evo_bars) -> Callable[..., EvolutionRun]:
    return run_add


@pytest.fixture
def evolver(db) -> User:
    user = User.objects.create_user("evolver", password="pw-evolver-123")
    user.user_permissions.add(Permission.objects.get(codename="run_evolution"))
    return user


@pytest.fixture
def evolver_client(evolver) -> APIClient:
    client = APIClient()
    client.force_authenticate(evolver)
    return client
