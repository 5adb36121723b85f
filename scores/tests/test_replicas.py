"""Read-your-writes routing between the primary and a replica (DATABASE_REPLICA_URL)."""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from scores.models import Score
from scores.replicas import PrimaryReplicaRouter, ReadYourWritesMiddleware

router = PrimaryReplicaRouter()


def serve(method: str, token: str, status: int = 200) -> str:
    """The database a read inside one request of ``method`` by ``token`` would use."""
    used: list[str] = []

    def view(request):
        used.append(router.db_for_read(Score))
        return HttpResponse(status=status)

    request = getattr(RequestFactory(), method)("/scores", HTTP_AUTHORIZATION=f"Bearer {token}")
    ReadYourWritesMiddleware(view)(request)
    return used[0]


def test_reads_go_to_the_replica_and_writes_to_the_primary() -> None:
    assert serve("get", "reader") == "replica"
    assert router.db_for_write(Score) == "default"


@pytest.mark.parametrize("method", ["post", "patch", "put", "delete"])
def test_a_writing_request_reads_on_the_primary(method) -> None:
    assert serve(method, f"writer-{method}") == "default"


def test_after_a_write_the_same_client_reads_the_primary_and_others_the_replica() -> None:
    serve("patch", "alice")

    assert serve("get", "alice") == "default"
    assert serve("get", "bob") == "replica"


def test_a_failed_write_does_not_pin_the_client() -> None:
    serve("patch", "carol", status=400)

    assert serve("get", "carol") == "replica"


def test_the_pin_expires() -> None:
    from django.core.cache import cache

    serve("patch", "dave")
    cache.clear()  # the REPLICA_STICKY_SECONDS have passed

    assert serve("get", "dave") == "replica"


def test_migrations_run_on_the_primary_only() -> None:
    assert router.allow_migrate("default", "scores") is True
    assert router.allow_migrate("replica", "scores") is False
