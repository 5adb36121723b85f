"""Who is calling, as the rest of the app needs to know it: a platform user vouched for by the
users service (``PlatformUser``), or a Django staff or service account; reduced to a
``Caller`` for the rules of visibility and permission."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest


@dataclass(frozen=True)
class PlatformUser:
    """A user of the platform, as the users service described them: ``request.user`` of a
    request with a bearer token."""

    id: int
    is_admin: bool

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False

    @property
    def pk(self) -> str:
        """Throttling identity, distinct from Django account ids."""
        return f"platform:{self.id}"

    def get_username(self) -> str:
        return str(self.id)

    def __str__(self) -> str:
        return f"user {self.id}"


@dataclass(frozen=True)
class Caller:
    """Whoever made a request.

    ``user_id`` is the platform user id (None for staff and service accounts, which are not
    platform users); ``privileged`` callers read and write anyone's scores; ``name`` is what
    the attempt log records as ``recorded_by``.
    """

    user_id: int | None
    privileged: bool
    name: str


def caller_of(request: HttpRequest) -> Caller:
    """The caller of an authenticated request (a DRF request or Django's)."""
    user: Any = request.user
    if isinstance(user, PlatformUser):
        return Caller(user_id=user.id, privileged=user.is_admin, name=str(user.id))
    return Caller(user_id=None, privileged=bool(user.is_staff), name=user.get_username())
