"""Who may do what (the spec's "Callers and what they may do"), as DRF permission classes and
the rules they share with the views: whose score a request may name.

The classes decide by the view's action for the request's method, so DRF's ``OPTIONS`` answer
(which checks them for the methods it describes) advertises only what the caller may do.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from scores.callers import Caller, PlatformUser, caller_of

OWN_ONLY = "You may only read and write your own scores."


def action_of(request: Request, view: Any) -> str | None:
    """The viewset action ``request``'s method maps to (also while ``OPTIONS`` describes
    another method of the route)."""
    actions = getattr(view, "action_map", None) or {}
    return actions.get((request.method or "").lower(), getattr(view, "action", None))


class IsScoresCaller(BasePermission):
    """A platform user (bearer token) or a staff account. Other Django accounts get a 403."""

    message = "Only platform users and staff accounts may use the scores API."

    def has_permission(self, request: Request, view: Any) -> bool:
        user: Any = request.user
        if user is None or not user.is_authenticated:
            return False
        return isinstance(user, PlatformUser) or bool(user.is_staff)


class IsPrivilegedForAction(BasePermission):
    """The view's ``privileged_actions`` (bulk, export, delete, ...) are for privileged callers
    only: staff accounts and platform admins. On a detail route it is decided once the object
    is found, so that another user's score is a 404 before it could be a 403."""

    message = "Only privileged callers may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return getattr(view, "detail", False) or self._allowed(request, view)

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        return self._allowed(request, view)

    def _allowed(self, request: Request, view: Any) -> bool:
        if action_of(request, view) not in getattr(view, "privileged_actions", ()):
            return True
        return caller_of(request).privileged


class IsPrivileged(BasePermission):
    """Privileged callers only (the events feed, webhook subscriptions, erasure)."""

    message = "Only privileged callers may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not hasattr(view, (request.method or "").lower()):
            return True  # a method the view does not have: a 405 whoever asks, as elsewhere
        return caller_of(request).privileged


class MayWriteScores(BasePermission):
    """Non-privileged callers write scores only while ``SCORES_SELF_REPORT`` is on; otherwise
    every write of theirs is a 403 (only the grader, a privileged caller, writes). The view's
    ``privileged_actions`` have their own rule (``IsPrivilegedForAction``)."""

    message = "Scores are written by the grader only."

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS or settings.SCORES_SELF_REPORT:
            return True
        if action_of(request, view) in getattr(view, "privileged_actions", ()):
            return True
        return caller_of(request).privileged


def target_user_id(caller: Caller, requested: int | None) -> int:
    """Whose score a write or a one-user read is about: the caller's own, or ``requested`` for
    a privileged caller.

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
        raise exceptions.PermissionDenied(OWN_ONLY)
    return requested


def may_see_user(caller: Caller, user_id: int) -> bool:
    """Whether the caller may see ``user_id``'s scores (a list naming another user is simply
    empty, one score of theirs is a 404)."""
    return caller.privileged or caller.user_id == user_id
