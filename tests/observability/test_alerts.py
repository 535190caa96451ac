"""The alert rules evaluated by Prometheus' own promtool on series built from real /metrics scrapes.

Jobs fail through the data-loader seam (CLM_DATA_LOADER), in the pipeline users run; the scrape
before the failures and the one after become two stretches of one-minute samples, and
`promtool test rules` says whether ClmTrainingJobsFailing fires. Promtool comes from Debian's
`prometheus` package (.ci/test installs it); without it the test skips, saying why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.samples import Sample

from registry import services
from registry.models import JobStatus, ModelType
from tests.seams import NO_BARS_LOADER
from training.pipeline import run_job

from .conftest import scrape

pytestmark = pytest.mark.django_db

RULES = Path(__file__).resolve().parents[2] / "docs/observability/prometheus/clm-alerts.yml"
JOB_COUNT = "clm_training_job_duration_seconds_count"
MINUTES = 5  # samples of each scrape, one a minute


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/test installs it)")
    return path


def _labels(sample: Sample) -> str:
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
    return f"{sample.name}{{{inner}}}"


def _series(before: list[Sample], after: list[Sample]) -> list[dict[str, str]]:
    """One input series per label set: the first scrape's value for MINUTES samples, then the
    second's (`_`: no sample, when the series did not exist yet)."""
    first = {_labels(s): s.value for s in before if s.name == JOB_COUNT}
    second = {_labels(s): s.value for s in after if s.name == JOB_COUNT}
    series = []
    for name in sorted(set(first) | set(second)):
        old = str(first[name]) if name in first else "_"
        new = str(second.get(name, first.get(name)))
        series.append({"series": name, "values": " ".join([old] * MINUTES + [new] * MINUTES)})
    return series


def _promtool_test(tmp_path: Path, series: list[dict[str, str]], expected: list[dict]) -> None:
    end = f"{2 * MINUTES - 1}m"  # the last sample: increase() needs no extrapolation there
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": end,
                        "alertname": "ClmTrainingJobsFailing",
                        "exp_alerts": expected,
                    }
                ],
            }
        ],
    }
    path = tmp_path / "clm-alerts-test.yml"
    path.write_text(json.dumps(test))  # JSON is YAML
    done = subprocess.run(
        [_promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _fail_jobs(n: int, model_type: str) -> None:
    for i in range(n):
        job, _ = services.training_job_create(
            request=services.JobRequest(model_type=model_type, symbol=f"FAIL{i}", timeframe="1h"),
            dispatch=False,
        )
        assert run_job(job_id=str(job.pk)) == JobStatus.FAILED


def test_the_failure_alert_fires_on_a_types_first_failures(staff_client, settings, tmp_path):
    settings.CLM_DATA_LOADER = NO_BARS_LOADER
    family = JOB_COUNT.removesuffix("_count")
    before = scrape(staff_client)
    # Every type's failure count exists before its first failure, at 0.
    failed = {
        s.labels["model_type"]: s.value
        for s in before[family]
        if s.name == JOB_COUNT and s.labels["status"] == "failed"
    }
    assert set(failed) >= set(ModelType.values) and failed["lightgbm"] == 0
    _fail_jobs(3, "lightgbm")
    after = scrape(staff_client)

    fired = {
        "exp_labels": {"severity": "warning", "model_type": "lightgbm"},
        "exp_annotations": {"summary": "3 lightgbm training jobs failed in 6 h"},
    }
    _promtool_test(tmp_path, _series(before[family], after[family]), [fired])

    # What the alert saw before the series were initialised: born at 3, so no increase at all.
    born_late = [
        s
        for s in before[family]
        if not (s.name == JOB_COUNT and s.labels == {"model_type": "lightgbm", "status": "failed"})
    ]
    _promtool_test(tmp_path, _series(born_late, after[family]), [])


def test_a_failed_job_is_logged_at_error_with_its_traceback(settings, caplog):
    settings.CLM_DATA_LOADER = "tests.seams.broken_loader"
    job, _ = services.training_job_create(
        request=services.JobRequest(model_type="xgboost", symbol="BROKEN", timeframe="1h"),
        dispatch=False,
    )
    with caplog.at_level("INFO", logger="training.pipeline"):
        assert run_job(job_id=str(job.pk)) == JobStatus.FAILED
    [record] = [r for r in caplog.records if r.getMessage().startswith("job failed at")]
    assert record.levelname == "ERROR" and "fetch_data" in record.getMessage()
    assert record.exc_info is not None
    assert "broken_loader" in caplog.text and "Traceback" in caplog.text
