"""Artifacts in an S3-compatible bucket (moto's server over HTTP on loopback): stored whole or not
at all, verified on every load, cached locally by sha256 within a size bound."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from django.conf import settings

from clm_project.settings.base import artifact_storage_backend
from registry.artifacts import (
    ArtifactCache,
    ArtifactError,
    artifact_cache,
    artifact_load,
    artifact_save,
    artifact_verify,
)
from tests.s3 import CuttingRelay, free_port

MODEL = "xgboost-btcusdt-1h"


def _sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def test_an_artifact_is_one_object_under_the_prefix_and_loads_verified(s3_artifacts):
    blob = b"\x00model-bytes\xff"
    stored = artifact_save(model_id=MODEL, blob=blob)

    assert stored.path == f"{MODEL}/{_sha(blob)}.clm"
    assert s3_artifacts.keys() == [s3_artifacts.key(stored.path)]
    client = s3_artifacts.client()
    body = client.get_object(Bucket=s3_artifacts.name, Key=s3_artifacts.key(stored.path))
    assert body["Body"].read() == b"\x00model-bytes\xff"
    assert artifact_load(path=stored.path, sha256=stored.sha256) == b"\x00model-bytes\xff"
    # Saving the same bytes again stores nothing new.
    assert artifact_save(model_id=MODEL, blob=b"\x00model-bytes\xff") == stored
    assert len(s3_artifacts.keys()) == 1


def test_a_loaded_artifact_is_cached_locally_by_sha256(s3_artifacts):
    stored = artifact_save(model_id=MODEL, blob=b"cached bytes")
    cache = artifact_cache()
    assert cache.get(stored.sha256) is None  # a save does not fill this machine's cache

    artifact_load(path=stored.path, sha256=stored.sha256)
    assert (settings.CLM_ARTIFACT_CACHE_DIR / stored.sha256).read_bytes() == b"cached bytes"
    # The next load on this machine needs no download: it works with the object gone.
    s3_artifacts.client().delete_object(Bucket=s3_artifacts.name, Key=s3_artifacts.key(stored.path))
    assert artifact_load(path=stored.path, sha256=stored.sha256) == b"cached bytes"
    # A verification asks the store itself: other machines could not load it.
    with pytest.raises(ArtifactError, match="is missing"):
        artifact_verify(path=stored.path, sha256=stored.sha256)


def test_a_missing_object_is_a_clear_error_and_a_409(s3_artifacts, operator_client, make_version):
    stored = artifact_save(model_id=MODEL, blob=b"soon gone")
    make_version(artifact=stored)
    s3_artifacts.client().delete_object(Bucket=s3_artifacts.name, Key=s3_artifacts.key(stored.path))

    with pytest.raises(ArtifactError, match="is missing"):
        artifact_load(path=stored.path, sha256=stored.sha256)
    response = operator_client.get(f"/clm/models/{MODEL}/versions/1/artifact")
    assert response.status_code == 409 and "missing" in response.json()["detail"]


def test_a_corrupted_object_fails_verification_and_is_not_cached(
    s3_artifacts, operator_client, make_version
):
    stored = artifact_save(model_id=MODEL, blob=b"the real model")
    make_version(artifact=stored)
    s3_artifacts.client().put_object(
        Bucket=s3_artifacts.name, Key=s3_artifacts.key(stored.path), Body=b"tampered"
    )

    with pytest.raises(ArtifactError, match="sha256"):
        artifact_load(path=stored.path, sha256=stored.sha256)
    assert artifact_cache().get(stored.sha256) is None
    response = operator_client.get(f"/clm/models/{MODEL}/versions/1/artifact")
    assert response.status_code == 409 and "sha256" in response.json()["detail"]


def test_the_store_going_away_mid_upload_stores_nothing(s3_server, s3_artifacts, settings):
    relay = CuttingRelay(s3_server.port, cut_after=256 * 1024)
    os.environ["CLM_S3_ENDPOINT_URL"] = relay.endpoint  # monkeypatched by s3_artifacts
    settings.STORAGES = {**settings.STORAGES, "artifacts": artifact_storage_backend("s3")}
    blob = os.urandom(1024 * 1024)

    started = time.monotonic()
    with pytest.raises(ArtifactError, match="could not be stored"):
        artifact_save(model_id=MODEL, blob=blob)
    assert relay.cut.is_set()  # the upload had begun when the store went away
    assert time.monotonic() - started < 60
    assert s3_artifacts.keys() == []


def test_a_store_that_is_down_is_a_clear_error_on_load(s3_artifacts, settings):
    stored = artifact_save(model_id=MODEL, blob=b"unreachable")
    os.environ["CLM_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    settings.STORAGES = {**settings.STORAGES, "artifacts": artifact_storage_backend("s3")}
    with pytest.raises(ArtifactError, match="unreadable"):
        artifact_load(path=stored.path, sha256=stored.sha256)


# ---------------------------------------------------------------------------------------------
# The local cache


def test_the_cache_stays_within_its_bound_least_recently_used_out_first(tmp_path):
    cache = ArtifactCache(tmp_path, max_bytes=250)
    blobs = [bytes([n]) * 100 for n in range(4)]
    for n, blob in enumerate(blobs[:2]):
        cache.put(_sha(blob), blob)
        os.utime(tmp_path / _sha(blob), ns=(n * 10**9, n * 10**9))  # a clear order of use
    assert cache.get(_sha(blobs[0])) == blobs[0]  # used again: now the most recent

    cache.put(_sha(blobs[2]), blobs[2])  # 300 bytes > 250: the least recently used goes
    assert cache.get(_sha(blobs[1])) is None
    assert cache.get(_sha(blobs[0])) == blobs[0] and cache.get(_sha(blobs[2])) == blobs[2]
    assert sum(stat.st_size for _, stat in cache.entries()) == 200
    # A blob larger than the whole cache is not kept at all.
    ArtifactCache(tmp_path, max_bytes=50).put(_sha(blobs[3]), blobs[3])
    assert not (tmp_path / _sha(blobs[3])).exists()


def test_a_corrupted_cache_file_is_dropped_and_downloaded_again(s3_artifacts):
    stored = artifact_save(model_id=MODEL, blob=b"good bytes")
    artifact_load(path=stored.path, sha256=stored.sha256)
    file = settings.CLM_ARTIFACT_CACHE_DIR / stored.sha256
    file.write_bytes(b"bit rot")

    assert artifact_load(path=stored.path, sha256=stored.sha256) == b"good bytes"
    assert file.read_bytes() == b"good bytes"


def test_the_cache_refuses_a_name_that_is_not_a_sha256(tmp_path):
    with pytest.raises(ArtifactError, match="not a sha256"):
        ArtifactCache(tmp_path, max_bytes=100).get("../../etc/passwd")
