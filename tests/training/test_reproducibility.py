"""Byte-identical retrains: the same data, params and seed give the same artifact sha256.

Each retrain runs in a process of its own, as two training jobs would on a worker: a difference
that only shows across processes (a memory address in a saved repr, a clock) fails the test.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from training.trainers._common import deterministic_zip

ROOT = Path(__file__).resolve().parents[2]

# Fits one family on a seeded synthetic market with the demo budget and prints the sha256 of the
# artifact it would store.
_RETRAIN = """
import hashlib, sys
from training.data.features import build_dataset
from training.data.synthetic import generate_bars
from training.trainers import DEMO_PARAMS, trainer_class

family = sys.argv[1]
bars, _ = generate_bars(2_000, seed=11)
trainer = trainer_class(family)(DEMO_PARAMS[family], seed=5)
trainer.fit(build_dataset(bars), slice(0, 1_800))
print(hashlib.sha256(trainer.dumps()).hexdigest())
"""

TREES = ["xgboost", "lightgbm"]
SLOW = ["nhits", "patchtst", "rl_v2", "rl_v3"]
# Every family trains real models here: the fast lane leaves them all out.
FAMILIES = [*(pytest.param(f, marks=pytest.mark.slow) for f in (*TREES, *SLOW))]


def _retrain(family: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-c", _RETRAIN, family],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_a_retrain_reproduces_the_artifact_bytes(family: str):
    runs = [_retrain(family), _retrain(family)]
    digests = []
    for run in runs:
        out, err = run.communicate(timeout=900)
        assert run.returncode == 0, err[-3_000:]
        digests.append(out.strip().splitlines()[-1])
    assert len(digests[0]) == 64 and digests[0] == digests[1]


def test_deterministic_zip_depends_on_contents_only():
    first = deterministic_zip({"b": b"2", "a": b"1"})
    assert first == deterministic_zip({"a": b"1", "b": b"2"})
    assert first != deterministic_zip({"a": b"1", "b": b"3"})
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert archive.namelist() == ["a", "b"]
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert archive.read("b") == b"2"
