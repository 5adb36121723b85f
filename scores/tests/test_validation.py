"""Every write refuses bad input with a 400 naming the field, and stores nothing."""

from __future__ import annotations

from typing import Any

import pytest

from scores.models import MAX_ID
from scores.tests.factories import ScoreFactory
from scores.tests.helpers import BOOLEAN, INTEGER, MISSING, NULL, RANGE, REQUIRED, stored

pytestmark = pytest.mark.django_db


BAD_IDS = [
    ("abc", INTEGER),
    ("5", INTEGER),
    (0, RANGE),
    (-1, RANGE),
    (MAX_ID + 1, RANGE),
    (10**30, RANGE),
    (1.5, INTEGER),
    (True, INTEGER),
    ([], INTEGER),
    ({}, INTEGER),
    (None, NULL),
]
BAD_CORRECT = [
    ("yes", BOOLEAN),
    ("true", BOOLEAN),
    (None, NULL),
    (2, BOOLEAN),
    (-1, BOOLEAN),
    (0.5, BOOLEAN),
    ([], BOOLEAN),
    (MISSING, REQUIRED),
]


def body(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"exercise_id": 3, "correct": True}
    base.update(fields)
    return {key: value for key, value in base.items() if value is not MISSING}


def invalid(field: str, message: str) -> dict[str, Any]:
    return {"detail": "Invalid input.", "errors": {field: [message]}}


@pytest.mark.parametrize("method", ["post", "patch"])
@pytest.mark.parametrize(("value", "message"), [*BAD_IDS, (MISSING, REQUIRED)])
def test_bad_exercise_id(admin, method, value, message) -> None:
    response = getattr(admin, method)("/scores", body(exercise_id=value), format="json")

    assert response.status_code == 400
    assert response.json() == invalid("exercise_id", message)
    assert stored() == []


@pytest.mark.parametrize("method", ["post", "patch"])
@pytest.mark.parametrize(("value", "message"), BAD_IDS)
def test_bad_user_id(admin, method, value, message) -> None:
    response = getattr(admin, method)("/scores", body(user_id=value), format="json")

    assert response.status_code == 400
    assert response.json() == invalid("user_id", message)
    assert stored() == []


@pytest.mark.parametrize("method", ["post", "patch"])
@pytest.mark.parametrize(("value", "message"), BAD_CORRECT)
def test_bad_correct(user, method, value, message) -> None:
    response = getattr(user, method)("/scores", body(correct=value), format="json")

    assert response.status_code == 400
    assert response.json() == invalid("correct", message)
    assert stored() == []


@pytest.mark.parametrize(("value", "message"), BAD_CORRECT)
def test_bad_correct_in_put_by_exercise(user, value, message) -> None:
    response = user.put("/scores/user/3", body(exercise_id=MISSING, correct=value), format="json")

    assert response.status_code == 400
    assert response.json() == invalid("correct", message)
    assert stored() == []


@pytest.mark.parametrize(("value", "message"), BAD_CORRECT)
def test_bad_correct_in_update_by_id(user, value, message) -> None:
    score = ScoreFactory(user_id=4, exercise_id=3, correct=False)

    response = user.put(
        f"/scores/{score.id}", body(exercise_id=MISSING, correct=value), format="json"
    )

    assert response.status_code == 400
    assert response.json() == invalid("correct", message)
    assert stored() == [(4, 3, False)]


@pytest.mark.parametrize(
    ("segment", "message"),
    [("abc", INTEGER), ("0", RANGE), (str(MAX_ID + 1), RANGE), ("-1", INTEGER), ("1.5", INTEGER)],
)
def test_bad_exercise_id_in_the_path(user, segment, message) -> None:
    put = user.put(f"/scores/user/{segment}", {"correct": True}, format="json")
    get = user.get(f"/scores/user/{segment}")

    assert put.status_code == get.status_code == 400
    assert put.json() == get.json() == invalid("exercise_id", message)
    assert stored() == []


@pytest.mark.parametrize(
    ("value", "expected"), [(1, True), (0, False), (True, True), (False, False)]
)
def test_correct_accepts_booleans_and_0_or_1(user, value, expected) -> None:
    response = user.patch("/scores", body(correct=value), format="json")

    assert response.status_code == 201
    assert response.json()["correct"] is expected
    assert stored() == [(4, 3, expected)]


def test_an_integral_float_id_is_accepted_as_that_integer(user) -> None:
    response = user.patch("/scores", body(exercise_id=3.0), format="json")

    assert response.status_code == 201
    assert stored() == [(4, 3, True)]


def test_ids_at_the_edges_of_the_range_are_accepted(admin) -> None:
    response = admin.patch("/scores", body(user_id=MAX_ID, exercise_id=1), format="json")

    assert response.status_code == 201
    assert stored() == [(MAX_ID, 1, True)]


def test_read_only_fields_in_the_body_are_ignored(user) -> None:
    extra = {"id": 999, "created_at": "2001-01-01T00:00:00Z", "updated_at": "x", "foo": 1}

    response = user.patch("/scores", body(**extra), format="json")

    assert response.status_code == 201
    assert response.json()["id"] != 999
    assert not response.json()["created_at"].startswith("2001")


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"[1, 2]", None),
        (b'"a string"', None),
        (b"42", None),
        (b"null", None),
    ],
)
def test_a_body_that_is_not_an_object_is_a_400(user, raw, detail) -> None:
    response = user.generic("PATCH", "/scores", raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["detail"] == "Invalid input."
    assert list(response.json()["errors"]) == ["non_field_errors"]
    assert stored() == []


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"exercise_id": 3, "correct": true', b"{'a': 1}", b"\xff\xfe", b'{"a": NaN'],
)
def test_malformed_json_is_a_400(user, raw) -> None:
    response = user.generic("PATCH", "/scores", raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error")
    assert set(response.json()) == {"detail"}
    assert stored() == []


def test_an_empty_body_names_the_missing_fields(user) -> None:
    response = user.generic("PATCH", "/scores", b"", content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Invalid input.",
        "errors": {"exercise_id": [REQUIRED], "correct": [REQUIRED]},
    }
