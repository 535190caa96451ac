"""Shared fixtures: PostgreSQL (pytest-django), API clients with and without rights."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient


@pytest.fixture
def reader(db) -> User:
    return User.objects.create_user("reader", password="pw-reader-123")


@pytest.fixture
def operator(db) -> User:
    """A user granted the two registry permissions (request training; promote and roll back)."""
    user = User.objects.create_user("operator", password="pw-operator-123")
    user.user_permissions.add(
        Permission.objects.get(codename="request_training"),
        Permission.objects.get(codename="promote_modelversion"),
    )
    return user


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def reader_client(reader) -> APIClient:
    client = APIClient()
    client.force_authenticate(reader)
    return client


@pytest.fixture
def operator_client(operator) -> APIClient:
    client = APIClient()
    client.force_authenticate(operator)
    return client
