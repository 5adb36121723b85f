"""Who may do what (see the spec's "Callers and what they may do")."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from scores.authentication import Caller, PlatformUser


class IsScoresCaller(BasePermission):
    """A platform user (bearer token) or a staff account. Other Django accounts get a 403."""

    message = "Only platform users and staff accounts may use the scores API."

    def has_permission(self, request: Request, view: Any) -> bool:
        user: Any = request.user
        if user is None or not user.is_authenticated:
            return False
        return isinstance(user, PlatformUser) or bool(user.is_staff)


def ensure_may_write(caller: Caller) -> None:
    """Non-privileged callers write only while ``SCORES_SELF_REPORT`` is on.

    Raises:
        PermissionDenied: self-reporting is off and the caller is not privileged.
    """
    if not caller.privileged and not settings.SCORES_SELF_REPORT:
        raise exceptions.PermissionDenied("Scores are written by the grader only.")


def ensure_privileged(caller: Caller) -> None:
    if not caller.privileged:
        raise exceptions.PermissionDenied("Only privileged callers may do this.")


def target_user_id(caller: Caller, requested: int | None) -> int:
    """Whose score a request is about: the caller's own, or ``requested`` for a privileged caller.

    Raises:
        PermissionDenied: a non-privileged caller named another user.
        ValidationError: the caller has no platform identity and named nobody.
    """
    if requested is None:
        if caller.user_id is None:
            raise exceptions.ValidationError(
                {"user_id": ["This field is required for staff and service accounts."]}
            )
        return caller.user_id
    if requested != caller.user_id and not caller.privileged:
        raise exceptions.PermissionDenied("You may only read and write your own scores.")
    return requested
