"""The evolution admin: runs show each generation's front picture, candidates their lineage."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from evolution import services
from evolution.models import RunStatus, StrategyCandidate

pytestmark = [pytest.mark.django_db, pytest.mark.slow]  # a finished run per test


@pytest.fixture
def admin_client_(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw-root-123"))
    return client


def test_run_pages_show_the_front_pictures(admin_client_, make_run):
    run = services.evolution_run_execute(run_id=make_run(population_size=4, generations=2).pk)
    listing = admin_client_.get("/admin/evolution/evolutionrun/")
    assert listing.status_code == 200 and str(run.pk)[:8] in listing.content.decode()
    page = admin_client_.get(f"/admin/evolution/evolutionrun/{run.pk}/change/").content.decode()
    for number in (1, 2):
        picture = f"/clm/evolution/runs/{run.pk}/generations/{number}/front.png"
        assert f'<img src="{picture}"' in page
        assert admin_client_.get(picture)["Content-Type"] == "image/png"  # session auth works


def test_candidate_page_shows_metrics_and_lineage(admin_client_, make_run):
    run = services.evolution_run_execute(run_id=make_run(population_size=4, generations=2).pk)
    child = StrategyCandidate.objects.filter(run=run, generation__number=2).first()
    page = admin_client_.get(f"/admin/evolution/strategycandidate/{child.pk}/change/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "parents" in body and "/admin/evolution/strategycandidate/" in body
    assert admin_client_.get("/admin/evolution/strategycandidate/").status_code == 200
    assert admin_client_.get("/admin/evolution/strategycandidate/add/").status_code == 403


def test_stop_action_calls_the_service(admin_client_, make_run):
    run = make_run()
    response = admin_client_.post(
        "/admin/evolution/evolutionrun/",
        {"action": "stop_selected", "_selected_action": [str(run.pk)]},
        follow=True,
    )
    assert response.status_code == 200
    run.refresh_from_db()
    assert run.status == RunStatus.STOPPED and run.error_message == "stopped by root"
