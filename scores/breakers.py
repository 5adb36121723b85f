"""Circuit breakers of the service's dependencies: one that keeps failing is not asked again on
every request until it has had time to recover (the contract's "Deadlines, slow clients and
overload").

Each breaker counts consecutive failures of one dependency in this process (a missed deadline,
a refused connection); at ``failure_threshold`` it opens, and for ``recovery_timeout`` seconds
callers answer at once without asking (a 503 with ``Retry-After``, or for Redis the
per-process fallback) instead of each waiting for the deadline. Then calls go through again;
one success closes it, one more failure opens it anew.

The ``circuitbreaker`` library keeps the state; pybreaker was not used because its ``call``
holds one lock across the guarded call, which would serialize every thread of a process
behind one slow call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

from circuitbreaker import CircuitBreaker

logger = logging.getLogger(__name__)


class DependencyBreaker(CircuitBreaker):
    """A breaker whose failures are the exceptions ``is_failure(exception)`` accepts; it logs
    when it opens and when it closes again."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        recovery_timeout: float,
        is_failure: Callable[[BaseException], bool],
    ) -> None:
        super().__init__(
            failure_threshold=failure_threshold,
            recovery_timeout=recovery_timeout,
            expected_exception=lambda _type, exception: is_failure(exception),
            name=name,
        )

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> Literal[False]:
        was_open = self._state != "closed"
        super().__exit__(exc_type, exc_value, traceback)
        if self._state == "open" and not was_open:
            logger.warning(
                "%s failing: not asked for %s s (%s)", self.name, self._recovery_timeout, exc_value
            )
        elif self._state == "closed" and was_open:
            logger.warning("%s answers again", self.name)
        return False  # the exception, if any, goes on

    def record_failure(self, exception: BaseException) -> None:
        """Count a failure of a call not made inside ``with breaker`` (a success there would
        close the breaker, which such a call must not do)."""
        self.__exit__(type(exception), exception, None)

    def retry_after(self) -> int:
        """Seconds until the breaker lets calls through again (at least 1)."""
        return max(1, int(self.open_remaining))
