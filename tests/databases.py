"""A PostgreSQL database of a test's own, for processes that must start from an empty one.

Import `empty_database_fixture` into a test module to use the `empty_database` fixture.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from django.conf import settings


def database_url(name: str) -> str:
    """The URL of database `name` on the server the tests use."""
    db = settings.DATABASES["default"]
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    return f"postgres://{db['USER']}{password}@{host}:{port}/{name}"


@pytest.fixture(name="empty_database")
def empty_database_fixture() -> Iterator[str]:
    """An empty database (no migrations) named after the test database, dropped afterwards."""
    name = f"{settings.DATABASES['default']['NAME']}_own_{uuid.uuid4().hex[:8]}"
    admin_url = database_url("postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
