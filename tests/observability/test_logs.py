"""LOG_FORMAT=json: one JSON object per line; each line of a job carries its job_id and model_id."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from clm_project.logging import JsonFormatter, log_context
from registry.services import JobRequest, training_job_create
from tests.training.conftest import store_bars
from training import pipeline

pytestmark = pytest.mark.django_db


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The root logger writing JSON into a buffer, as LOG_FORMAT=json configures the console."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(previous)


def _parsed(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def _job(symbol: str) -> str:
    job, _ = training_job_create(
        request=JobRequest(
            model_type="xgboost", symbol=symbol, timeframe="1h",
            params={"n_estimators": 40, "max_depth": 3},
        ),
        dispatch=False,
    )  # fmt: skip
    return str(job.pk)


def test_every_line_of_a_pipeline_run_carries_the_job(json_lines, settings):
    store_bars("BTCUSDT", 3_000, seed=11)
    # A loader that knows nothing of the job logs a line.
    settings.CLM_DATA_LOADER = "tests.loaders.logging_loader"
    job_id = _job("BTCUSDT")
    assert pipeline.run_job(job_id=job_id) == "completed"

    lines = _parsed(json_lines)
    assert len(lines) >= 3
    for line in lines:
        assert line["job_id"] == job_id, line
        assert line["model_id"] == "xgboost-btcusdt-1h", line
        assert {"time", "level", "logger", "message"} <= set(line)
    reading = next(line for line in lines if line["message"] == "reading bars")
    assert reading["logger"] == "tests.loaders" and reading["step"] == "fetch_data"
    assert lines[-1]["message"].startswith("job completed")


def test_a_failed_job_logs_its_step_and_error_on_one_line(json_lines, settings):
    settings.CLM_DATA_LOADER = "tests.loaders.failing_loader"
    job_id = _job("ETHUSDT")
    assert pipeline.run_job(job_id=job_id) == "failed"
    raw = json_lines.getvalue().splitlines()
    lines = [json.loads(line) for line in raw]  # the newline in the error stays inside one line
    failed = next(line for line in lines if line["message"].startswith("job failed at fetch_data"))
    assert failed["level"] == "ERROR" and failed["job_id"] == job_id
    assert failed["model_id"] == "xgboost-ethusdt-1h"
    assert failed["exception"].startswith("Traceback")
    assert "in failing_loader" in failed["exception"]


def test_context_nests_and_ends_with_its_block(json_lines):
    log = logging.getLogger("clm.test")
    with log_context(job_id="j1", model_id="m1"):
        with log_context(step="train", model_id=None):
            log.info("inner")
        log.info("outer", extra={"job_id": "explicit"})
    log.info("after")
    inner, outer, after = _parsed(json_lines)
    assert (inner["job_id"], inner["model_id"], inner["step"]) == ("j1", "m1", "train")
    assert outer["job_id"] == "explicit" and "step" not in outer
    assert "job_id" not in after and "model_id" not in after
