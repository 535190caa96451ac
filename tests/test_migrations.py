"""A database made at the schema before the promotion app existed migrates forward cleanly: the
moved tables keep their rows, the new models read them, and granted permissions stay granted."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from training.promotion.models import PromotionPolicy, RollbackPolicy, ShadowComparison

# The leaf migrations of the apps that changed, as they were before the move.
BEFORE = [("registry", "0003_lifecycle_shadow_experiments_rollback")]


def _migrate(targets: list[tuple[str, str]]):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_a_database_of_the_old_layout_migrates_forward_with_its_rows():
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    old = _migrate(BEFORE)
    assert not old.is_installed("training.promotion")
    registered = old.get_model("registry", "RegisteredModel").objects.create(
        model_id="xgboost-btcusdt-1h", model_type="xgboost", symbol="BTCUSDT", timeframe="1h"
    )
    version = old.get_model("registry", "ModelVersion").objects
    production = version.create(model=registered, version=1, status="production")
    shadow = version.create(model=registered, version=2, status="shadow")
    old.get_model("registry", "PromotionPolicy").objects.create(
        model_type="xgboost", min_sharpe=0.7
    )
    old.get_model("registry", "RollbackPolicy").objects.create(model_type="lightgbm")
    comparison = old.get_model("registry", "ShadowComparison").objects.create(
        model=registered, shadow=shadow, production=production,
        start_after=datetime(2026, 1, 1, tzinfo=UTC), fee=0.0005, periods_per_year=8760,
        min_bars=100, min_trades=5, max_bars=400, looks=4, alpha=0.05, spending="obrien_fleming",
    )  # fmt: skip
    # A permission granted on a moved model while it belonged to the registry app.
    user = User.objects.create_user("auditor")
    content_type = ContentType.objects.get(app_label="registry", model="shadowcomparison")
    user.user_permissions.add(
        Permission.objects.get(content_type=content_type, codename="view_shadowcomparison")
    )

    _migrate(latest)

    assert PromotionPolicy.objects.get(model_type="xgboost").min_sharpe == 0.7
    assert RollbackPolicy.objects.filter(model_type="lightgbm").exists()
    moved = ShadowComparison.objects.get(pk=comparison.pk)
    assert (moved.shadow.version, moved.production.version, moved.max_bars) == (2, 1, 400)
    assert ShadowComparison._meta.db_table == "registry_shadowcomparison"
    assert not ContentType.objects.filter(app_label="registry", model="shadowcomparison").exists()
    assert User.objects.get(pk=user.pk).has_perm("promotion.view_shadowcomparison")
