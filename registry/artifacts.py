"""Version artifacts in Django's `artifacts` storage, content-addressed and sha256-verified.

The storage is the local filesystem or an S3-compatible bucket (settings.CLM_ARTIFACT_STORAGE).
Either way an artifact is written whole or not at all: on disk through a temporary file renamed
into place, on S3 as one object that appears only once its upload completed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, storages

logger = logging.getLogger(__name__)


class ArtifactError(Exception):
    """An artifact is missing, unreadable or unstorable, or its bytes do not match the recorded
    sha256."""


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
    if isinstance(storage, FileSystemStorage):
        if not storage.exists(name):
            tmp = storage.save(f"{model_id}/.tmp-{uuid.uuid4().hex}", ContentFile(blob))
            os.replace(storage.path(tmp), storage.path(name))
        return StoredArtifact(path=name, sha256=digest, size=len(blob))
    try:
        if not storage.exists(name):
            storage.save(name, ContentFile(blob))
    except Exception as exc:  # the store went away or refused: nothing was stored
        raise ArtifactError(
            f"artifact {name} could not be stored: {exc.__class__.__name__}: {exc}"
        ) from exc
    return StoredArtifact(path=name, sha256=digest, size=len(blob))


def artifact_load(*, path: str, sha256: str, cached: bool = True) -> bytes:
    """The artifact's bytes, verified against the recorded `sha256` on every load.

    From a remote store (not the local filesystem) they come from the local cache when it has
    them (unless `cached` is False), else they are downloaded and cached for the next load on
    this machine.
    """
    storage = artifact_storage()
    remote = not isinstance(storage, FileSystemStorage)
    if remote and cached:
        hit = artifact_cache().get(sha256)
        if hit is not None:
            return hit
    try:
        if not storage.exists(path):
            raise ArtifactError(f"artifact {path} is missing")
        with storage.open(path, "rb") as handle:
            blob = handle.read()
    except ArtifactError:
        raise
    except Exception as exc:  # a remote store that is down or refuses: the same clear error
        raise ArtifactError(f"artifact {path} unreadable: {exc.__class__.__name__}: {exc}") from exc
    actual = hashlib.sha256(blob).hexdigest()
    if actual != sha256:
        raise ArtifactError(f"artifact {path} sha256 {actual[:12]}… != recorded {sha256[:12]}…")
    if remote:
        try:
            artifact_cache().put(sha256, blob)
        except OSError as exc:  # a full or read-only local disk costs a download, not the load
            logger.warning("artifact %s not cached locally: %s", path, exc)
    return blob


def artifact_verify(*, path: str, sha256: str) -> None:
    """The stored artifact (in the store itself, not this machine's cache) is there and intact:
    every machine can load it."""
    artifact_load(path=path, sha256=sha256, cached=False)


class ArtifactCache:
    """Downloaded artifacts on local disk, one file per sha256, bounded in total size.

    Each hit refreshes the file's modification time; once the files add up to more than
    `max_bytes` the least recently used go first. A file whose bytes no longer match its name is
    dropped and the artifact downloaded again. Safe across processes: files are written under a
    temporary name and renamed into place, and a file removed by another process is a miss.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def _file(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ArtifactError(f"not a sha256: {sha256[:80]!r}")
        return self.directory / sha256

    def get(self, sha256: str) -> bytes | None:
        file = self._file(sha256)
        try:
            blob = file.read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(blob).hexdigest() != sha256:
            file.unlink(missing_ok=True)
            return None
        with contextlib.suppress(FileNotFoundError):
            os.utime(file)
        return blob

    def put(self, sha256: str, blob: bytes) -> None:
        if len(blob) > self.max_bytes:
            return
        file = self._file(sha256)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".tmp-{uuid.uuid4().hex}"
        tmp.write_bytes(blob)
        os.replace(tmp, file)
        self.evict()

    def entries(self) -> list[tuple[Path, os.stat_result]]:
        """Cached files, least recently used first."""
        found = []
        for file in self.directory.glob("[0-9a-f]" * 64):
            with contextlib.suppress(FileNotFoundError):
                found.append((file, file.stat()))
        return sorted(found, key=lambda entry: entry[1].st_mtime_ns)

    def evict(self) -> None:
        entries = self.entries()
        total = sum(stat.st_size for _, stat in entries)
        for file, stat in entries:
            if total <= self.max_bytes:
                break
            file.unlink(missing_ok=True)
            total -= stat.st_size


def artifact_cache() -> ArtifactCache:
    return ArtifactCache(Path(settings.CLM_ARTIFACT_CACHE_DIR), settings.CLM_ARTIFACT_CACHE_BYTES)
