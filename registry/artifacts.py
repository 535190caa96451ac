"""Version artifacts in Django's `artifacts` storage, content-addressed and sha256-verified."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, storages


class ArtifactError(Exception):
    """An artifact is missing or its bytes do not match the recorded sha256."""


@dataclass(frozen=True)
class StoredArtifact:
    path: str
    sha256: str
    size: int


def artifact_storage() -> Storage:
    return storages["artifacts"]


def artifact_save(*, model_id: str, blob: bytes, suffix: str = ".clm") -> StoredArtifact:
    """Write `blob` under `<model_id>/<sha256><suffix>`.

    On the filesystem the bytes go to a temporary file that is renamed into place, so a crash never
    leaves a partial artifact under the final name. Identical bytes are stored once.
    """
    digest = hashlib.sha256(blob).hexdigest()
    name = f"{model_id}/{digest}{suffix}"
    storage = artifact_storage()
    if storage.exists(name):
        return StoredArtifact(path=name, sha256=digest, size=len(blob))
    if isinstance(storage, FileSystemStorage):
        tmp = storage.save(f"{model_id}/.tmp-{uuid.uuid4().hex}", ContentFile(blob))
        os.replace(storage.path(tmp), storage.path(name))
    else:
        storage.save(name, ContentFile(blob))
    return StoredArtifact(path=name, sha256=digest, size=len(blob))


def artifact_load(*, path: str, sha256: str) -> bytes:
    storage = artifact_storage()
    if not storage.exists(path):
        raise ArtifactError(f"artifact {path} is missing")
    with storage.open(path, "rb") as handle:
        blob = handle.read()
    actual = hashlib.sha256(blob).hexdigest()
    if actual != sha256:
        raise ArtifactError(f"artifact {path} sha256 {actual[:12]}… != recorded {sha256[:12]}…")
    return blob


def artifact_verify(*, path: str, sha256: str) -> None:
    artifact_load(path=path, sha256=sha256)
