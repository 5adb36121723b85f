"""The scores endpoints for every kind of caller: statuses, full bodies, stored rows."""

from __future__ import annotations

import pytest
from django.db import connection
from rest_framework.test import APIClient

from scores.models import Attempt, Score
from scores.tests.conftest import ADMIN_ID, OTHER_ID, USER_ID
from scores.tests.factories import ScoreFactory
from scores.tests.helpers import iso, page, score_json, stored

pytestmark = pytest.mark.django_db


@pytest.fixture
def mine() -> Score:
    return ScoreFactory(user_id=USER_ID, exercise_id=7, correct=False)


@pytest.fixture
def theirs() -> Score:
    return ScoreFactory(user_id=OTHER_ID, exercise_id=7, correct=True)


# --- GET /scores ---------------------------------------------------------------------------


def test_list_requires_credentials(anon: APIClient) -> None:
    response = anon.get("/scores")

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert response["WWW-Authenticate"] == 'Bearer realm="evalsvc"'


def test_list_shows_a_user_only_their_own_scores(user, mine, theirs) -> None:
    response = user.get("/scores")

    assert response.status_code == 200
    assert response.json() == page([score_json(mine)])


def test_list_filtered_by_another_user_id_shows_a_user_nothing(user, mine, theirs) -> None:
    response = user.get(f"/scores?user_id={OTHER_ID}")

    assert response.status_code == 200
    assert response.json() == page([])


@pytest.mark.parametrize("caller", ["admin", "staff"])
def test_list_shows_privileged_callers_everyone(caller, request, mine, theirs) -> None:
    client = request.getfixturevalue(caller)

    response = client.get("/scores")

    assert response.status_code == 200
    assert response.json() == page([score_json(mine), score_json(theirs)])


def test_list_refuses_a_django_account_that_is_neither_staff_nor_a_platform_user(
    non_staff,
) -> None:
    response = non_staff.get("/scores")

    assert response.status_code == 403
    assert response.json() == {
        "detail": "Only platform users and staff accounts may use the scores API."
    }


# --- POST /scores --------------------------------------------------------------------------


def test_create_stores_the_callers_score(user) -> None:
    response = user.post("/scores", {"exercise_id": 12, "correct": True}, format="json")

    assert response.status_code == 201
    score = Score.objects.get()
    assert response.json() == score_json(score)
    assert stored() == [(USER_ID, 12, True)]
    assert score.created_at == score.updated_at


def test_create_with_the_callers_own_user_id_is_allowed(user) -> None:
    body = {"user_id": USER_ID, "exercise_id": 12, "correct": False}

    response = user.post("/scores", body, format="json")

    assert response.status_code == 201
    assert stored() == [(USER_ID, 12, False)]


def test_create_for_another_user_is_forbidden_to_a_user(user) -> None:
    body = {"user_id": OTHER_ID, "exercise_id": 12, "correct": True}

    response = user.post("/scores", body, format="json")

    assert response.status_code == 403
    assert response.json() == {"detail": "You may only read and write your own scores."}
    assert stored() == []


@pytest.mark.parametrize("caller", ["admin", "staff"])
def test_create_for_any_user_by_a_privileged_caller(caller, request) -> None:
    client = request.getfixturevalue(caller)

    response = client.post(
        "/scores", {"user_id": 99, "exercise_id": 12, "correct": True}, format="json"
    )

    assert response.status_code == 201
    assert response.json() == score_json(Score.objects.get())
    assert stored() == [(99, 12, True)]


def test_create_by_an_admin_without_user_id_is_for_the_admin_themself(admin) -> None:
    response = admin.post("/scores", {"exercise_id": 12, "correct": True}, format="json")

    assert response.status_code == 201
    assert stored() == [(ADMIN_ID, 12, True)]


def test_create_by_a_staff_account_must_name_the_user(staff) -> None:
    response = staff.post("/scores", {"exercise_id": 12, "correct": True}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Invalid input.",
        "errors": {"user_id": ["This field is required for staff and service accounts."]},
    }
    assert stored() == []


def test_create_of_an_existing_score_is_a_conflict_pointing_to_the_upsert(user, mine) -> None:
    before = score_json(mine)

    response = user.post("/scores", {"exercise_id": 7, "correct": True}, format="json")

    assert response.status_code == 409
    assert response.json() == {
        "detail": "A score for this user and exercise already exists; "
        "PATCH /scores updates it (upsert)."
    }
    assert score_json(mine) == before


# --- PATCH /scores (the old client's call) -------------------------------------------------


def test_upsert_creates_then_updates_one_row(user) -> None:
    created = user.patch("/scores", {"exercise_id": 5, "correct": True}, format="json")
    updated = user.patch("/scores", {"exercise_id": 5, "correct": False}, format="json")

    score = Score.objects.get()
    assert created.status_code == 201
    assert updated.status_code == 200
    assert updated.json() == score_json(score)
    assert created.json()["id"] == updated.json()["id"] == score.id
    assert created.json()["created_at"] == updated.json()["created_at"] == iso(score.created_at)
    assert updated.json()["updated_at"] > created.json()["updated_at"]
    assert stored() == [(USER_ID, 5, False)]


def test_upsert_for_another_user_is_forbidden_to_a_user(user, theirs) -> None:
    before = score_json(theirs)
    body = {"user_id": OTHER_ID, "exercise_id": 7, "correct": False}

    response = user.patch("/scores", body, format="json")

    assert response.status_code == 403
    assert score_json(theirs) == before


@pytest.mark.parametrize("caller", ["admin", "staff"])
def test_upsert_of_another_users_score_by_a_privileged_caller(caller, request, theirs) -> None:
    client = request.getfixturevalue(caller)
    body = {"user_id": OTHER_ID, "exercise_id": 7, "correct": False}

    response = client.patch("/scores", body, format="json")

    assert response.status_code == 200
    assert response.json() == score_json(theirs)
    assert stored() == [(OTHER_ID, 7, False)]


# --- GET /scores/{id} ----------------------------------------------------------------------


def test_retrieve_own_score(user, mine) -> None:
    response = user.get(f"/scores/{mine.id}")

    assert response.status_code == 200
    assert response.json() == score_json(mine)


def test_retrieve_another_users_score_is_not_found_not_forbidden(user, theirs) -> None:
    hidden = user.get(f"/scores/{theirs.id}")
    missing = user.get(f"/scores/{theirs.id + 1000}")

    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json() == {"detail": "No such score."}


@pytest.mark.parametrize("caller", ["admin", "staff"])
def test_retrieve_anyones_score_by_a_privileged_caller(caller, request, theirs) -> None:
    response = request.getfixturevalue(caller).get(f"/scores/{theirs.id}")

    assert response.status_code == 200
    assert response.json() == score_json(theirs)


@pytest.mark.parametrize("score_id", ["0", "9223372036854775808", "99999999999999999999999"])
def test_retrieve_an_impossible_id_is_not_found(user, score_id) -> None:
    response = user.get(f"/scores/{score_id}")

    assert response.status_code == 404
    assert response.json() == {"detail": "No such score."}


def test_retrieve_anonymously_requires_credentials(anon, mine) -> None:
    assert anon.get(f"/scores/{mine.id}").status_code == 401


# --- PUT / PATCH /scores/{id} --------------------------------------------------------------


@pytest.mark.parametrize("method", ["put", "patch"])
def test_update_sets_correct_and_keeps_created_at(user, mine, method) -> None:
    before = score_json(mine)

    response = getattr(user, method)(f"/scores/{mine.id}", {"correct": True}, format="json")

    after = score_json(mine)
    assert response.status_code == 200
    assert response.json() == after
    assert after == {
        **before,
        "correct": True,
        "updated_at": after["updated_at"],
        "attempts": 2,
        "first_correct_at": after["updated_at"],  # no attempted_at sent: the time of the write
    }
    assert after["updated_at"] > before["updated_at"]


@pytest.mark.parametrize(
    "body",
    [
        {"correct": True, "user_id": OTHER_ID},
        {"correct": True, "exercise_id": 8},
    ],
)
def test_update_refuses_to_change_the_scores_identity(user, mine, body) -> None:
    before = score_json(mine)
    field = "user_id" if "user_id" in body else "exercise_id"

    response = user.put(f"/scores/{mine.id}", body, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Invalid input.",
        "errors": {field: ["Cannot be changed: it identifies the score."]},
    }
    assert score_json(mine) == before


def test_update_repeating_the_scores_own_ids_is_fine(user, mine) -> None:
    body = {"correct": True, "user_id": USER_ID, "exercise_id": 7}

    response = user.put(f"/scores/{mine.id}", body, format="json")

    assert response.status_code == 200
    assert stored() == [(USER_ID, 7, True)]


def test_update_without_correct_is_invalid(user, mine) -> None:
    response = user.patch(f"/scores/{mine.id}", {}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Invalid input.",
        "errors": {"correct": ["This field is required."]},
    }


def test_update_of_another_users_score_is_not_found(user, theirs) -> None:
    before = score_json(theirs)

    response = user.put(f"/scores/{theirs.id}", {"correct": False}, format="json")

    assert response.status_code == 404
    assert score_json(theirs) == before


@pytest.mark.parametrize("caller", ["admin", "staff"])
def test_update_of_anyones_score_by_a_privileged_caller(caller, request, theirs) -> None:
    response = request.getfixturevalue(caller).put(
        f"/scores/{theirs.id}", {"correct": False}, format="json"
    )

    assert response.status_code == 200
    assert response.json() == score_json(theirs)
    assert stored() == [(OTHER_ID, 7, False)]


# --- DELETE /scores/{id} -------------------------------------------------------------------


def test_delete_own_score_is_forbidden_to_a_user(user, mine) -> None:
    response = user.delete(f"/scores/{mine.id}")

    assert response.status_code == 403
    assert response.json() == {"detail": "Only privileged callers may do this."}
    assert stored() == [(USER_ID, 7, False)]


def test_delete_of_another_users_score_is_not_found_to_a_user(user, theirs) -> None:
    response = user.delete(f"/scores/{theirs.id}")

    assert response.status_code == 404
    assert stored() == [(OTHER_ID, 7, True)]


@pytest.mark.parametrize("caller", ["admin", "staff"])
def test_delete_by_a_privileged_caller(caller, request, mine, theirs) -> None:
    response = request.getfixturevalue(caller).delete(f"/scores/{theirs.id}")

    assert response.status_code == 204
    assert response.content == b""
    assert stored() == [(USER_ID, 7, False)]


def test_delete_of_a_missing_score_is_not_found(admin) -> None:
    response = admin.delete("/scores/12345")

    assert response.status_code == 404
    assert response.json() == {"detail": "No such score."}


# --- GET /scores/user ----------------------------------------------------------------------


def test_own_scores(user, mine, theirs) -> None:
    response = user.get("/scores/user")

    assert response.status_code == 200
    assert response.json() == page([score_json(mine)])


def test_own_scores_of_an_admin_are_the_admins(admin, mine) -> None:
    own = ScoreFactory(user_id=ADMIN_ID, exercise_id=1)

    response = admin.get("/scores/user")

    assert response.json() == page([score_json(own)])


def test_own_scores_named_by_a_privileged_caller(staff, mine, theirs) -> None:
    response = staff.get(f"/scores/user?user_id={OTHER_ID}")

    assert response.status_code == 200
    assert response.json() == page([score_json(theirs)])


def test_own_scores_of_a_staff_account_need_a_user_id(staff) -> None:
    response = staff.get("/scores/user")

    assert response.status_code == 400
    assert response.json()["errors"] == {
        "user_id": ["This field is required for staff and service accounts."]
    }


def test_own_scores_with_another_user_id_show_a_user_nothing(user, theirs) -> None:
    response = user.get(f"/scores/user?user_id={OTHER_ID}")

    assert response.status_code == 200
    assert response.json() == page([])


# --- GET / PUT /scores/user/{exercise_id} --------------------------------------------------


def test_own_score_for_an_exercise(user, mine, theirs) -> None:
    response = user.get("/scores/user/7")

    assert response.status_code == 200
    assert response.json() == score_json(mine)


def test_own_score_for_an_exercise_without_one_is_not_found(user, theirs) -> None:
    response = user.get("/scores/user/7")

    assert response.status_code == 404
    assert response.json() == {"detail": "No score for this exercise."}


def test_own_score_for_an_exercise_of_another_user_is_not_found_to_a_user(user, theirs) -> None:
    response = user.get(f"/scores/user/7?user_id={OTHER_ID}")

    assert response.status_code == 404


@pytest.mark.parametrize("caller", ["admin", "staff"])
def test_score_for_an_exercise_of_any_user_by_a_privileged_caller(caller, request, theirs):
    response = request.getfixturevalue(caller).get(f"/scores/user/7?user_id={OTHER_ID}")

    assert response.status_code == 200
    assert response.json() == score_json(theirs)


def test_put_own_score_for_an_exercise_upserts(user) -> None:
    created = user.put("/scores/user/9", {"correct": False}, format="json")
    updated = user.put("/scores/user/9", {"correct": True}, format="json")

    score = Score.objects.get()
    assert (created.status_code, updated.status_code) == (201, 200)
    assert updated.json() == score_json(score)
    assert stored() == [(USER_ID, 9, True)]


def test_put_score_for_another_user_is_forbidden_to_a_user(user) -> None:
    response = user.put("/scores/user/9", {"correct": True, "user_id": OTHER_ID}, format="json")

    assert response.status_code == 403
    assert stored() == []


@pytest.mark.parametrize("caller", ["admin", "staff"])
def test_put_score_for_any_user_by_a_privileged_caller(caller, request) -> None:
    client = request.getfixturevalue(caller)

    response = client.put("/scores/user/9", {"correct": True, "user_id": OTHER_ID}, format="json")

    assert response.status_code == 201
    assert response.json() == score_json(Score.objects.get())
    assert stored() == [(OTHER_ID, 9, True)]


def test_put_score_for_a_user_named_in_the_query_by_a_privileged_caller(staff) -> None:
    response = staff.put(f"/scores/user/9?user_id={OTHER_ID}", {"correct": True}, format="json")

    assert response.status_code == 201
    assert stored() == [(OTHER_ID, 9, True)]


# --- SCORES_SELF_REPORT=false: only the grader writes --------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/scores", {"exercise_id": 3, "correct": True}),
        ("patch", "/scores", {"exercise_id": 3, "correct": True}),
        ("put", "/scores/user/3", {"correct": True}),
        ("put", "/scores/{id}", {"correct": True}),
        ("patch", "/scores/{id}", {"correct": True}),
    ],
)
def test_without_self_report_users_may_not_write(settings, user, mine, method, path, body):
    settings.SCORES_SELF_REPORT = False
    before = stored()

    response = getattr(user, method)(path.format(id=mine.id), body, format="json")

    assert response.status_code == 403
    assert response.json() == {"detail": "Scores are written by the grader only."}
    assert stored() == before


def test_without_self_report_the_grader_still_writes(settings, staff) -> None:
    settings.SCORES_SELF_REPORT = False

    response = staff.patch(
        "/scores", {"user_id": USER_ID, "exercise_id": 3, "correct": True}, format="json"
    )

    assert response.status_code == 201
    assert stored() == [(USER_ID, 3, True)]


def test_without_self_report_users_still_read(settings, user, mine) -> None:
    settings.SCORES_SELF_REPORT = False

    assert user.get(f"/scores/{mine.id}").status_code == 200


# --- Public endpoints ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/scores/ping", {"status": "success", "message": "pong!"}),
        ("/health", {"status": "ok"}),
        ("/ready", {"status": "ok"}),
    ],
)
def test_public_endpoints_answer_anonymous_callers(anon, path, body) -> None:
    response = anon.get(path)

    assert response.status_code == 200
    assert response.json() == body


def test_health_does_not_touch_the_database(anon, django_assert_num_queries) -> None:
    with django_assert_num_queries(0):
        assert anon.get("/health").status_code == 200


def test_schema_is_public_openapi(anon) -> None:
    response = anon.get("/schema", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert set(schema["paths"]) >= {
        "/scores",
        "/scores/{id}",
        "/scores/user",
        "/scores/user/{exercise_id}",
        "/scores/ping",
        "/health",
        "/ready",
    }
    assert set(schema["components"]["securitySchemes"]) == {"bearerAuth", "tokenAuth", "cookieAuth"}


def test_docs_are_served_with_local_assets(anon) -> None:
    response = anon.get("/docs")

    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "//cdn" not in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html


# --- Every route with and without the trailing slash, never a redirect ---------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", "/scores", None, 200),
        ("post", "/scores", {"exercise_id": 40, "correct": True}, 201),
        ("patch", "/scores", {"exercise_id": 41, "correct": True}, 201),
        ("get", "/scores/{id}", None, 200),
        ("put", "/scores/{id}", {"correct": True}, 200),
        ("patch", "/scores/{id}", {"correct": True}, 200),
        ("get", "/scores/user", None, 200),
        ("get", "/scores/user/7", None, 200),
        ("put", "/scores/user/42", {"correct": True}, 201),
        ("get", "/scores/ping", None, 200),
        ("get", "/health", None, 200),
        ("get", "/ready", None, 200),
        ("get", "/schema", None, 200),
        ("get", "/docs", None, 200),
    ],
)
@pytest.mark.parametrize("slash", ["", "/"])
def test_routes_answer_with_and_without_trailing_slash(
    user, mine, method, path, body, status, slash
):
    response = getattr(user, method)(path.format(id=mine.id) + slash, body, format="json")

    assert response.status_code == status


@pytest.mark.parametrize("slash", ["", "/"])
def test_delete_answers_with_and_without_trailing_slash(admin, mine, slash) -> None:
    assert admin.delete(f"/scores/{mine.id}{slash}").status_code == 204


# --- Query budgets (verdict cached) --------------------------------------------------------


def test_query_budget_of_list_retrieve_and_upsert(user, mine, django_assert_max_num_queries):
    user.get("/scores/ping")
    user.get("/scores")  # the token's verdict is now cached

    with django_assert_max_num_queries(1):
        assert user.get("/scores").status_code == 200
    with django_assert_max_num_queries(1):
        assert user.get(f"/scores/{mine.id}").status_code == 200
    # The write: the upsert, its event and its attempt-log row (one statement on PostgreSQL),
    # in a savepoint, as the test itself runs in a transaction.
    with django_assert_max_num_queries(5) as write:
        response = user.patch("/scores", {"exercise_id": 7, "correct": True}, format="json")
        assert response.status_code == 200
    statements = [query["sql"].split()[0] for query in write.captured_queries]
    if connection.vendor == "postgresql":
        assert statements == ["SAVEPOINT", "WITH", "RELEASE"]
    else:
        assert statements == ["SAVEPOINT", "INSERT", "INSERT", "INSERT", "RELEASE"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's one-statement write")
def test_on_postgresql_an_applied_write_is_one_statement_and_its_own_transaction(
    user, django_assert_num_queries
) -> None:
    ScoreFactory(user_id=USER_ID, exercise_id=7, correct=False)
    user.get("/scores")  # the token's verdict is now cached

    with django_assert_num_queries(1) as write:
        response = user.patch("/scores", {"exercise_id": 7, "correct": True}, format="json")

    assert response.status_code == 200
    assert write.captured_queries[0]["sql"].startswith("WITH applied AS (INSERT INTO scores")
    assert stored() == [(USER_ID, 7, True)]
    assert list(Attempt.objects.values_list("user_id", "exercise_id", "correct", "applied")) == [
        (USER_ID, 7, True, True)
    ]


def test_schema_is_valid_openapi_without_generator_warnings(tmp_path) -> None:
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yml"))

    assert "/scores/user/{exercise_id}" in (tmp_path / "s.yml").read_text()
