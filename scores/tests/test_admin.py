"""The Django admin of scores: a list that stays cheap on millions of rows (bounded count, indexed
filters and search), staff edits through the write service, the CSV action and the statistics
page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scores import admin as scores_admin
from scores.models import Attempt, Score
from scores.services import Write, score_write
from scores.tests.helpers import iso

pytestmark = pytest.mark.django_db

LIST = "/admin/scores/score/"
STATS = "/admin/scores/score/statistics/"
HEADER = "id,user_id,exercise_id,correct,created_at,updated_at,points,max_points\n"


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def staff_client(django_user_model: Any, username: str, *permissions: str) -> Client:
    account = django_user_model.objects.create_user(username, is_staff=True)
    account.user_permissions.set(
        Permission.objects.filter(content_type__app_label="scores", codename__in=permissions)
    )
    client = Client()
    client.force_login(account)
    return client


@pytest.fixture
def staffer(django_user_model: Any) -> Client:
    """A staff account that may view and change scores (not a superuser)."""
    return staff_client(django_user_model, "staffer", "view_score", "change_score")


@pytest.fixture
def rows() -> list[Score]:
    """Five scores with fixed update times, in id order."""
    scores = []
    for user_id, exercise_id, correct, updated_at in (
        (4, 3, True, at(2026, 1, 2)),
        (5, 3, False, at(2026, 3, 1)),
        (4, 7, False, timezone.now() - timedelta(hours=1)),
        (42, 9, True, at(2026, 2, 1)),
        (6, 42, True, timezone.now() - timedelta(days=3)),
    ):
        score = Score.objects.create(user_id=user_id, exercise_id=exercise_id, correct=correct)
        Score.objects.filter(id=score.id).update(updated_at=updated_at)
        scores.append(score)
    return scores


def listed(response: Any) -> list[tuple[int, int, bool]]:
    """The scores a list page shows, in its order, as (user_id, exercise_id, correct)."""
    assert response.status_code == 200
    return [(s.user_id, s.exercise_id, s.correct) for s in response.context["cl"].result_list]


# --- The list ---------------------------------------------------------------------------------


def test_list_shows_the_newest_scores_first_with_a_bounded_count(staffer, rows) -> None:
    with CaptureQueriesContext(connection) as captured:
        response = staffer.get(LIST)

    assert listed(response) == [
        (6, 42, True),
        (42, 9, True),
        (4, 7, False),
        (5, 3, False),
        (4, 3, True),
    ]
    assert str(response.context["cl"].result_count) == "5"
    assert "5 scores" in response.content.decode()
    counts = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    assert len(counts) == 1
    assert f"LIMIT {scores_admin.COUNT_CAP + 1}" in counts[0]  # never a count of the table


def test_list_past_the_count_cap_says_more_than(staffer, rows, monkeypatch) -> None:
    monkeypatch.setattr(scores_admin, "COUNT_CAP", 3)

    response = staffer.get(LIST)

    assert response.status_code == 200
    assert str(response.context["cl"].result_count) == "more than 3"
    assert response.context["cl"].result_count == 4
    assert "more than 3 scores" in response.content.decode()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"correct__exact": "1"}, [(6, 42, True), (42, 9, True), (4, 3, True)]),
        ({"correct__exact": "0"}, [(4, 7, False), (5, 3, False)]),
        ({"exercise": "3"}, [(5, 3, False), (4, 3, True)]),
        ({"exercise": "8"}, []),
        (
            {"exercise": ""},
            [(6, 42, True), (42, 9, True), (4, 7, False), (5, 3, False), (4, 3, True)],
        ),
        ({"user": "4"}, [(4, 7, False), (4, 3, True)]),
        ({"user": "4", "exercise": "3"}, [(4, 3, True)]),
        ({"exercise": "3", "correct__exact": "0"}, [(5, 3, False)]),
        (
            {
                "updated_at__gte": "2026-01-01 00:00:00+00:00",
                "updated_at__lt": "2026-03-01 00:00:00+00:00",
            },
            [(42, 9, True), (4, 3, True)],
        ),
    ],
)
def test_list_filters(staffer, rows, query, expected) -> None:
    assert listed(staffer.get(LIST, query)) == expected


def test_list_date_filter_past_7_days_is_one_of_its_links(staffer, rows) -> None:
    response = staffer.get(LIST)
    past_week = next(
        choice
        for spec in response.context["cl"].filter_specs
        if spec.title == "updated at"
        for choice in spec.choices(response.context["cl"])
        if choice["display"] == "Past 7 days"
    )

    assert listed(staffer.get(LIST + past_week["query_string"])) == [(6, 42, True), (4, 7, False)]


def test_list_id_filter_boxes_keep_the_other_parameters(staffer, rows) -> None:
    query = {"correct__exact": "1", "q": "42", "exercise": "42"}
    html = staffer.get(LIST, query).content.decode()

    forms = re.findall(r'<form method="get" class="id-filter">.*?</form>', html, re.S)
    assert [
        (
            re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form),
            re.findall(r'<input type="text" [^>]*name="([^"]+)" value="([^"]*)"', form),
        )
        for form in forms
    ] == [
        ([("correct__exact", "1"), ("q", "42"), ("exercise", "42")], [("user", "")]),
        ([("correct__exact", "1"), ("q", "42")], [("exercise", "42")]),
    ]


@pytest.mark.parametrize("query", [{"exercise": "abc"}, {"exercise": "0"}, {"user": "2147483648"}])
def test_list_with_a_bad_id_filter_redirects_with_the_error_flag(staffer, rows, query) -> None:
    response = staffer.get(LIST, query)

    assert response.status_code == 302
    assert response["Location"] == LIST + "?e=1"


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("42", [(6, 42, True), (42, 9, True)]),  # user 42 or exercise 42
        ("user:4", [(4, 7, False), (4, 3, True)]),
        ("exercise:3", [(5, 3, False), (4, 3, True)]),
        ("user:4 exercise:3", [(4, 3, True)]),
        ("3 4", [(4, 3, True)]),
        ("  7  ", [(4, 7, False)]),
    ],
)
def test_search_by_ids(staffer, rows, term, expected) -> None:
    with CaptureQueriesContext(connection) as captured:
        response = staffer.get(LIST, {"q": term})

    assert listed(response) == expected
    # Equality on the integer columns (their indexes), not Django's text comparison.
    assert not any("UPPER(" in query["sql"] for query in captured.captured_queries)


@pytest.mark.parametrize(
    ("term", "message"),
    [
        ("abc", "Search 'abc': Must be an integer. Nothing matches it."),
        (
            "user:-1",
            "Search 'user:-1': Must be an integer from 1 to 2147483647. Nothing matches it.",
        ),
        ("id:5", "Search 'id:5': say user:<id> or exercise:<id>. Nothing matches it."),
    ],
)
def test_search_for_a_non_id_matches_nothing_and_says_why(staffer, rows, term, message) -> None:
    response = staffer.get(LIST, {"q": term})

    assert listed(response) == []
    assert [str(m) for m in response.context["messages"]] == [message]


@pytest.mark.parametrize(
    ("order", "expected_sql", "expected"),
    [
        ("3", '"exercise_id" ASC, "scores"."id" ASC', [3, 3, 7, 9, 42]),
        ("-3", '"exercise_id" DESC, "scores"."id" DESC', [42, 9, 7, 3, 3]),
    ],
)
def test_list_orders_by_a_column_with_the_id_in_the_same_direction(
    staffer, rows, order, expected_sql, expected
) -> None:
    with CaptureQueriesContext(connection) as captured:
        response = staffer.get(LIST, {"o": order})

    assert [score.exercise_id for score in response.context["cl"].result_list] == expected
    assert any(expected_sql in query["sql"] for query in captured.captured_queries)


def test_list_offers_only_indexed_orderings(staffer, rows) -> None:
    response = staffer.get(LIST)

    sortable = [h["text"] for h in response.context["result_headers"] if h["sortable"]]
    assert sortable == ["id", "user id", "exercise id", "updated at"]


# --- One score: its attempts, staff edits ---------------------------------------------------


def test_change_page_shows_the_attempt_log_oldest_first(staffer) -> None:
    score_write(
        write=Write(user_id=4, exercise_id=3, correct=True, attempted_at=at(2026, 1, 2)),
        recorded_by="grader",
    )
    score_write(
        write=Write(user_id=4, exercise_id=3, correct=False, attempted_at=at(2026, 1, 1)),
        recorded_by="late-grader",
    )
    score = Score.objects.get()
    first, second = Attempt.objects.order_by("attempted_at")

    html = staffer.get(f"{LIST}{score.id}/change/").content.decode()

    table = re.search(r"<table><thead><tr><th>attempted at</th>.*?</table>", html, re.S)
    assert table is not None
    assert table.group() == (
        "<table><thead><tr><th>attempted at</th><th>result</th><th>applied</th>"
        "<th>recorded by</th><th>recorded at</th><th>attempt id</th></tr></thead><tbody>"
        f"<tr><td>2026-01-01 00:00:00+00:00</td><td>incorrect</td>"
        f"<td>no (older than the score)</td><td>late-grader</td><td>{first.recorded_at}</td>"
        "<td></td></tr>"
        f"<tr><td>2026-01-02 00:00:00+00:00</td><td>correct</td><td>yes</td><td>grader</td>"
        f"<td>{second.recorded_at}</td><td></td></tr>"
        "</tbody></table>"
    )


def test_staff_edit_goes_through_the_write_service_and_logs_an_attempt(staffer) -> None:
    score_write(write=Write(user_id=4, exercise_id=3, correct=False), recorded_by="grader")
    score = Score.objects.get()

    response = staffer.post(
        f"{LIST}{score.id}/change/",
        {"correct": "on", "reason": "Test case 3 was wrong", "_save": "Save"},
    )

    assert response.status_code == 302
    assert response["Location"] == LIST
    assert list(
        Score.objects.values_list("id", "user_id", "exercise_id", "correct", "attempts")
    ) == [(score.id, 4, 3, True, 2)]
    assert list(
        Attempt.objects.order_by("id").values_list(
            "score_id", "user_id", "exercise_id", "correct", "recorded_by", "applied", "reason"
        )
    ) == [
        (score.id, 4, 3, False, "grader", True, None),
        (score.id, 4, 3, True, "staffer", True, "Test case 3 was wrong"),
    ]


def test_staff_add_creates_through_the_write_service(admin_client) -> None:
    response = admin_client.post(
        f"{LIST}add/", {"user_id": "4", "exercise_id": "3", "correct": "on", "_save": "Save"}
    )

    assert response.status_code == 302
    assert list(Score.objects.values_list("user_id", "exercise_id", "correct", "attempts")) == [
        (4, 3, True, 1)
    ]
    assert list(Attempt.objects.values_list("user_id", "exercise_id", "recorded_by")) == [
        (4, 3, "admin")
    ]


def test_staff_add_of_an_existing_score_is_a_form_error(admin_client) -> None:
    score_write(write=Write(user_id=4, exercise_id=3, correct=False), recorded_by="grader")

    response = admin_client.post(
        f"{LIST}add/", {"user_id": "4", "exercise_id": "3", "correct": "on", "_save": "Save"}
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "__all__": ["Score with this User id and Exercise id already exists."]
    }
    assert Attempt.objects.count() == 1


# --- CSV action -------------------------------------------------------------------------------


def csv_line(score: Score) -> str:
    score.refresh_from_db()
    return (
        f"{score.id},{score.user_id},{score.exercise_id},{'true' if score.correct else 'false'},"
        f"{iso(score.created_at)},{iso(score.updated_at)},,\n"
    )


def test_csv_action_exports_the_selected_scores(staffer, rows) -> None:
    selected = [rows[3].id, rows[0].id]

    response = staffer.post(LIST, {"action": "export_csv", "_selected_action": selected})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="scores.csv"'
    assert b"".join(response.streaming_content).decode() == (
        HEADER + csv_line(rows[0]) + csv_line(rows[3])
    )


def test_csv_action_on_all_exports_every_score_the_filters_match(staffer, rows) -> None:
    response = staffer.post(
        LIST + "?exercise=3",
        {"action": "export_csv", "select_across": "1", "_selected_action": [rows[0].id]},
    )

    assert response.status_code == 200
    assert b"".join(response.streaming_content).decode() == (
        HEADER + csv_line(rows[0]) + csv_line(rows[1])
    )


def test_csv_action_is_offered_to_viewers(django_user_model, rows) -> None:
    viewer = staff_client(django_user_model, "viewer", "view_score")

    actions = viewer.get(LIST).context["action_form"].fields["action"].choices

    assert list(actions) == [("", "---------"), ("export_csv", "Export selected scores as CSV")]


# --- Statistics page ----------------------------------------------------------------------------


@pytest.fixture
def graded() -> None:
    """Exercise 3: 4 users, 3 correct; exercise 7: 2 users, none correct; exercise 9: 1 user,
    correct at the second attempt."""
    for user_id, exercise_id, correct in (
        (1, 3, True),
        (2, 3, True),
        (3, 3, True),
        (4, 3, False),
        (1, 7, False),
        (2, 7, False),
        (1, 9, False),
        (1, 9, True),
    ):
        score_write(
            write=Write(user_id=user_id, exercise_id=exercise_id, correct=correct),
            recorded_by="grader",
        )


STATS_ROWS = {
    3: {
        "exercise_id": 3,
        "attempted": 4,
        "correct": 3,
        "success_rate": 0.75,
        "first_try_correct": 3,
        "avg_attempts_to_correct": 1.0,
        "avg_points_ratio": None,
        "points_percent": None,
        "percent": "75.0",
        "attempted_width": "100.00",
        "correct_width": "75.00",
    },
    7: {
        "exercise_id": 7,
        "attempted": 2,
        "correct": 0,
        "success_rate": 0.0,
        "first_try_correct": 0,
        "avg_attempts_to_correct": None,
        "avg_points_ratio": None,
        "points_percent": None,
        "percent": "0.0",
        "attempted_width": "50.00",
        "correct_width": "0.00",
    },
    9: {
        "exercise_id": 9,
        "attempted": 1,
        "correct": 1,
        "success_rate": 1.0,
        "first_try_correct": 0,
        "avg_attempts_to_correct": 2.0,
        "avg_points_ratio": None,
        "points_percent": None,
        "percent": "100.0",
        "attempted_width": "25.00",
        "correct_width": "25.00",
    },
}


@pytest.mark.parametrize(
    ("order", "exercises"),
    [("", [3, 7, 9]), ("exercise", [3, 7, 9]), ("attempted", [3, 7, 9]), ("rate", [7, 3, 9])],
)
def test_statistics_per_exercise_with_totals(staffer, graded, order, exercises) -> None:
    with CaptureQueriesContext(connection) as captured:
        response = staffer.get(STATS, {"o": order} if order else {})

    assert response.status_code == 200
    assert response.context["rows"] == [STATS_ROWS[exercise] for exercise in exercises]
    assert response.context["totals"] == {
        "exercises": 3,
        "attempted": 7,
        "correct": 4,
        "most_attempted": 4,
        "percent": "57.1",
    }
    # The trigger-kept counters only: no query reads the scores table.
    assert not any('FROM "scores"' in query["sql"] for query in captured.captured_queries)


def test_statistics_draws_each_exercise_as_a_bar(staffer, graded) -> None:
    html = staffer.get(STATS).content.decode()

    bars = re.findall(
        r'<svg class="stats-bar" role="img" aria-label="([^"]+)">\s*'
        r'<rect class="attempted" x="0" y="0" height="100%" width="([\d.]+)%"/>\s*'
        r'<rect class="correct" x="0" y="0" height="100%" width="([\d.]+)%"/>',
        html,
    )
    assert bars == [
        ("3 of 4 correct", "100.00", "75.00"),
        ("0 of 2 correct", "50.00", "0.00"),
        ("1 of 1 correct", "25.00", "25.00"),
    ]
    totals = re.search(r'<table class="stats-totals" id="stats-totals">.*?</table>', html, re.S)
    assert totals is not None
    assert re.findall(
        r"<th scope=\"row\">([^<]+)</th><td class=\"num\">([^<]+)</td>", totals.group()
    ) == [
        ("Exercises with scores", "3"),
        ("Scores (user and exercise pairs)", "7"),
        ("Correct scores", "4"),
        ("Success rate", "57.1 %"),
        ("Grading policy", "latest (a score is its newest attempt)"),
    ]
    assert (
        "<script"
        not in Path(scores_admin.__file__)
        .with_name("templates")
        .joinpath("admin/scores/score/statistics.html")
        .read_text()
    )  # drawn by the server, no script


def test_statistics_of_no_scores(staffer) -> None:
    response = staffer.get(STATS)

    assert response.status_code == 200
    assert response.context["rows"] == []
    assert response.context["totals"] == {
        "exercises": 0,
        "attempted": 0,
        "correct": 0,
        "most_attempted": 0,
        "percent": None,
    }
    assert "No scores yet." in response.content.decode()


def test_statistics_is_paginated(staffer, graded, monkeypatch) -> None:
    monkeypatch.setattr(scores_admin, "STATS_PER_PAGE", 2)

    first = staffer.get(STATS)
    second = staffer.get(STATS, {"p": "2"})
    beyond = staffer.get(STATS, {"p": "9"})

    assert [row["exercise_id"] for row in first.context["rows"]] == [3, 7]
    assert [row["exercise_id"] for row in second.context["rows"]] == [9]
    assert [row["exercise_id"] for row in beyond.context["rows"]] == [9]  # the last page
    assert "Page 1 of 2 (3 exercises)" in first.content.decode()
    assert '<a href="?o=exercise&amp;p=2">next</a>' in first.content.decode()


def test_admin_index_links_to_the_statistics(staffer) -> None:
    html = staffer.get("/admin/").content.decode()

    assert f'<a href="{STATS}">Exercise statistics</a>' in html


def test_score_list_links_to_the_statistics(staffer) -> None:
    assert f'<a href="{STATS}">Exercise statistics</a>' in staffer.get(LIST).content.decode()


def test_staff_without_the_view_permission_neither_sees_nor_opens_the_statistics(
    django_user_model,
) -> None:
    bare = staff_client(django_user_model, "bare")

    assert bare.get(STATS).status_code == 403
    assert "Exercise statistics" not in bare.get("/admin/").content.decode()


def test_non_staff_cannot_see_the_statistics(django_user_model) -> None:
    member = django_user_model.objects.create_user("member")
    client = Client()
    client.force_login(member)

    response = client.get(STATS)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={STATS}"


def test_anonymous_cannot_see_the_statistics(client) -> None:
    response = client.get(STATS)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={STATS}"
