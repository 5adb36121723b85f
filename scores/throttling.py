"""DRF's rate throttles, made to fail open: a cache outage must not turn requests into 500s."""

from __future__ import annotations

import logging
from typing import Any

from rest_framework import throttling
from rest_framework.request import Request

logger = logging.getLogger(__name__)


class FailOpenMixin:
    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return super().allow_request(request, view)  # type: ignore[misc]
        except Exception:  # the cache (Redis) is down: serve rather than refuse everyone
            logger.warning("throttle cache unavailable; request not throttled", exc_info=True)
            return True


class UserRateThrottle(FailOpenMixin, throttling.UserRateThrottle):
    """Per authenticated caller: ``THROTTLE_RATE_USER``."""


class AnonRateThrottle(FailOpenMixin, throttling.AnonRateThrottle):
    """Per anonymous client address: ``THROTTLE_RATE_ANON``."""
