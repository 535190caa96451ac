"""Authentication on the request path: the API's token lookup and Django's permission check,
each in one query compiled once per process; on PostgreSQL, both in the token's one query for a
request that may write.

They answer exactly as DRF's TokenAuthentication and Django's ModelBackend do (same messages,
same rules for inactive users and superusers) and read the database on every request, so a
token deleted or a permission revoked in the admin takes effect on the next request.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend as DjangoModelBackend
from django.contrib.auth.models import Permission
from django.contrib.postgres.expressions import ArraySubquery
from django.db import connections, router
from django.db.models import OuterRef, Q, Value
from django.db.models.functions import Concat
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token
from rest_framework.permissions import SAFE_METHODS

from clm_project.compiled import CompiledQuery

_TOKEN = CompiledQuery(lambda key: Token.objects.select_related("user").filter(key=key), key=str)


def _permission_names(user_id: Any) -> ArraySubquery:
    """The `app_label.codename` of a user's own and group permissions, as ModelBackend names
    them."""
    return ArraySubquery(
        Permission.objects.filter(Q(user=user_id) | Q(group__user=user_id))
        .values(perm=Concat("content_type__app_label", Value("."), "codename"))
        .order_by()
        .distinct()
    )


# PostgreSQL: the token, its user and the user's permission names in one query.
_TOKEN_AND_PERMISSIONS = CompiledQuery(
    lambda key: (
        Token.objects.select_related("user")
        .filter(key=key)
        .annotate(user_permissions=_permission_names(OuterRef("user_id")))
    ),
    key=str,
)


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication (`Authorization: Token <key>`) with the lookup precompiled.

    On PostgreSQL a request that may write (not GET, HEAD or OPTIONS) reads the user's
    permissions with the token, since its view checks them; a read, whose views mostly check
    none, reads the token alone (a read that checks one reads them as ModelBackend does)."""

    with_permissions = True

    def authenticate(self, request: Any) -> tuple[Any, Token] | None:
        self.with_permissions = request.method not in SAFE_METHODS
        return super().authenticate(request)

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        if self.get_model() is not Token:
            return super().authenticate_credentials(key)
        token: Token | None
        postgresql = connections[router.db_for_read(Token)].vendor == "postgresql"
        if postgresql and self.with_permissions:
            found = _TOKEN_AND_PERMISSIONS.first(key=key)
            if found is not None and found.user.is_active and not found.user.is_superuser:
                # ModelBackend's cache of the user's and groups' permissions, filled as it would
                # fill it (a superuser's and an inactive user's are answered without it).
                found.user._perm_cache = set(found.user_permissions)  # type: ignore[attr-defined]
            token = found
        else:
            token = _TOKEN.first(key=key)
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return (token.user, token)


# A user's own permissions and those of their groups, in one query.
_PERMISSIONS = CompiledQuery(
    lambda user_id: (
        Permission.objects.filter(Q(user=user_id) | Q(group__user=user_id))
        .select_related("content_type")
        .distinct()
    ),
    user_id=int,
)


class ModelBackend(DjangoModelBackend):
    """Django's ModelBackend, reading a user's own and group permissions in one query instead of
    two; superusers and inactive users are answered as Django answers them."""

    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if user_obj.is_superuser:
            return super().get_all_permissions(user_obj, obj)
        if not hasattr(user_obj, "_perm_cache"):  # per user object: one request
            user_obj._perm_cache = {
                f"{perm.content_type.app_label}.{perm.codename}"
                for perm in _PERMISSIONS.rows(user_id=user_obj.pk)
            }
        return user_obj._perm_cache
