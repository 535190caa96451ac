"""Authentication on the request path: the API's token lookup and Django's permission check,
each in one query compiled once per process.

They answer exactly as DRF's TokenAuthentication and Django's ModelBackend do (same messages,
same rules for inactive users and superusers) and read the database on every request, so a
token deleted or a permission revoked in the admin takes effect on the next request.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend as DjangoModelBackend
from django.contrib.auth.models import Permission
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from clm_project.compiled import CompiledQuery

_TOKEN = CompiledQuery(lambda key: Token.objects.select_related("user").filter(key=key), key=str)


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication (`Authorization: Token <key>`) with the lookup precompiled."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        if self.get_model() is not Token:
            return super().authenticate_credentials(key)
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
