"""A real S3-protocol server for the tests: moto's standalone server on loopback, a bucket per
test, and a relay in front of it that can drop every connection mid-upload (the store going away).

Workers started by the tests reach the same server through the environment of `S3Bucket.env`.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "clm-test", "AWS_SECRET_ACCESS_KEY": "clm-test-secret"}
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """`moto_server` in a subprocess, listening on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.gettempdir()) / f"clm-moto-{self.port}.log"
        moto = Path(sys.executable).with_name("moto_server")
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited early; see {self.log}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto_server did not answer within 60 s; see {self.log}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class S3Bucket:
    """One test's bucket and key prefix on the server at `endpoint`."""

    endpoint: str
    name: str
    prefix: str = "clm"

    def client(self) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip

    def env(self, *, endpoint: str | None = None) -> dict[str, str]:
        """What a process needs to keep its artifacts here (settings.base)."""
        return {
            **CREDENTIALS,
            "CLM_ARTIFACT_STORAGE": "s3",
            "CLM_S3_BUCKET": self.name,
            "CLM_S3_PREFIX": self.prefix,
            "CLM_S3_ENDPOINT_URL": endpoint or self.endpoint,
            "CLM_S3_REGION": REGION,
            "CLM_S3_TIMEOUT_S": "5",
            "CLM_S3_MAX_ATTEMPTS": "2",
        }

    def keys(self) -> list[str]:
        found = self.client().list_objects_v2(Bucket=self.name).get("Contents", [])
        return sorted(item["Key"] for item in found)

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}"


def bucket_create(endpoint: str) -> S3Bucket:
    bucket = S3Bucket(endpoint=endpoint, name=f"clm-test-{uuid.uuid4().hex[:10]}")
    bucket.client().create_bucket(Bucket=bucket.name)
    return bucket


class CuttingRelay:
    """A TCP relay to the S3 server that, once one connection has sent `cut_after` bytes,
    drops every connection and stops listening: the store goes away in the middle of an upload,
    and every later attempt finds nobody there."""

    def __init__(self, upstream_port: int, *, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cut = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, counted: bool) -> None:
        sent = 0
        try:
            while chunk := source.recv(65_536):
                if counted and sent + len(chunk) > self.cut_after:
                    self.stop()
                    return
                target.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.cut.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
