"""Concurrent writes of one (user, exercise) over real parallel requests on PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections

from scores.models import Score
from scores.tests.conftest import bearer_client

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="concurrency is a PostgreSQL property"
    ),
]

THREADS = 32


def in_parallel(request: Callable[[int], Any], count: int = THREADS) -> list[Any]:
    """Run ``request(i)`` in ``count`` threads released at once; each uses its own connection."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = request(index)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_upserts_of_one_pair_leave_one_row_and_no_error(users_service) -> None:
    token = users_service.user(4)
    bearer_client(token).get("/scores")  # verdict cached, so the race is on the database

    responses = in_parallel(
        lambda i: bearer_client(token).patch(
            "/scores", {"exercise_id": 9, "correct": i % 2 == 0}, format="json"
        )
    )

    statuses = Counter(response.status_code for response in responses)
    assert statuses == {201: 1, 200: THREADS - 1}
    assert Score.objects.filter(user_id=4, exercise_id=9).count() == 1
    assert len({response.json()["id"] for response in responses}) == 1


def test_concurrent_puts_by_exercise_leave_one_row(users_service) -> None:
    token = users_service.user(4)
    bearer_client(token).get("/scores")

    responses = in_parallel(
        lambda i: bearer_client(token).put("/scores/user/9", {"correct": True}, format="json")
    )

    assert Counter(r.status_code for r in responses) == {201: 1, 200: THREADS - 1}
    assert Score.objects.count() == 1


def test_concurrent_creates_of_one_pair_make_one_score_and_conflicts(users_service) -> None:
    token = users_service.user(4)
    bearer_client(token).get("/scores")

    responses = in_parallel(
        lambda i: bearer_client(token).post(
            "/scores", {"exercise_id": 9, "correct": True}, format="json"
        )
    )

    assert Counter(r.status_code for r in responses) == {201: 1, 409: THREADS - 1}
    assert Score.objects.count() == 1
