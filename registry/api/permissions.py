"""Who may change the registry through the API. Reads only need an authenticated user.

The two permissions are ordinary Django model permissions, granted to users or groups in the admin.
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

REQUEST_TRAINING = "registry.request_training"
PROMOTE = "registry.promote_modelversion"


class CanRequestTraining(BasePermission):
    message = f"Requesting or cancelling training needs the {REQUEST_TRAINING} permission."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.user.has_perm(REQUEST_TRAINING)


class CanPromote(BasePermission):
    message = f"Promoting or rolling back needs the {PROMOTE} permission."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.user.has_perm(PROMOTE)


class CanDownloadArtifact(BasePermission):
    """Artifacts are the models themselves: staff or a holder of either registry permission."""

    message = f"Downloading artifacts needs staff status, {REQUEST_TRAINING} or {PROMOTE}."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        return user.is_staff or user.has_perm(REQUEST_TRAINING) or user.has_perm(PROMOTE)
