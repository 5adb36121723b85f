"""Inputs from real bug reports of services like this one, each kind a table over every route or
parser it can reach: cursors the service did not issue, chunked bodies, HTML asked for errors,
deeply nested JSON, control characters where an id, a timestamp or a UUID is expected, and
OPTIONS advertising what the caller may not do. (Refused credentials spending the anonymous
rate: test_throttling.py; attempt ids scoped per user: test_history.py.)"""

from __future__ import annotations

import base64
import io
import json
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_started
from django.db import close_old_connections
from django.test import RequestFactory
from rest_framework.test import APIClient

from evalsvc.wsgi import ChunkedBodies
from scores.models import Attempt, Score
from scores.tests.conftest import USER_ID
from scores.tests.factories import ScoreFactory
from scores.tests.helpers import stored

pytestmark = pytest.mark.django_db

INVALID_CURSOR = {"detail": "Invalid input.", "errors": {"cursor": ["Invalid cursor."]}}


# --- Cursors the service did not issue ---------------------------------------------------------


@pytest.fixture
def lists(user: APIClient) -> dict[str, str]:
    """Every cursor-paginated list, each with more than one page for ``user``."""
    scores = [ScoreFactory(user_id=USER_ID, exercise_id=exercise) for exercise in (1, 2, 3)]
    for _ in range(2):
        user.patch("/scores", {"exercise_id": 1, "correct": True}, format="json")
    return {
        "scores": "/scores",
        "own scores": "/scores/user",
        "exercise stats": "/scores/stats/exercises",
        "attempts by score": f"/scores/{scores[0].id}/attempts",
        "attempts by exercise": "/scores/user/1/attempts",
    }


def cursor_of(response: Any) -> str:
    return parse_qs(urlsplit(response.json()["next"]).query)["cursor"][0]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


FORGED: dict[str, Callable[[str], str]] = {
    "drf-style-position-abc": lambda real: b64("p=abc"),
    "drf-style-position-1": lambda real: b64("p=1"),
    "drf-style-offset-huge": lambda real: b64("o=99999999999&p=1"),
    "drf-style-reverse-garbage": lambda real: b64("r=yes"),
    "not-base64": lambda real: "%%%",
    "empty": lambda real: "",
    "nul-byte": lambda real: "\x00",
    "control-characters": lambda real: real + "\x01\x1f",
    "non-ascii": lambda real: "é" + real,
    "truncated": lambda real: real[: len(real) // 2],
    "edited-last-character": lambda real: real[:-1] + ("A" if real[-1] != "A" else "B"),
    "edited-payload": lambda real: "X" + real[1:],
    "very-long": lambda real: real * 200,
}


@pytest.mark.parametrize("forge", FORGED.values(), ids=FORGED.keys())
@pytest.mark.parametrize(
    "name",
    ["scores", "own scores", "exercise stats", "attempts by score", "attempts by exercise"],
)
def test_a_cursor_the_service_did_not_issue_is_a_400_naming_cursor(
    user: APIClient, lists: dict[str, str], name: str, forge: Callable[[str], str]
) -> None:
    path = lists[name]
    real = cursor_of(user.get(path, {"page_size": 1}))

    response = user.get(path, {"page_size": 1, "cursor": forge(real)})

    assert (response.status_code, response.json()) == (400, INVALID_CURSOR)


@pytest.mark.parametrize(
    ("issued_by", "used_on"),
    [
        ("exercise stats", "scores"),
        ("scores", "attempts by score"),
        ("attempts by score", "scores"),
    ],
)
def test_a_cursor_of_another_list_is_a_400(
    user: APIClient, lists: dict[str, str], issued_by: str, used_on: str
) -> None:
    cursor = cursor_of(user.get(lists[issued_by], {"page_size": 1}))

    response = user.get(lists[used_on], {"cursor": cursor})

    assert (response.status_code, response.json()) == (400, INVALID_CURSOR)


@pytest.mark.parametrize(
    "name",
    ["scores", "own scores", "exercise stats", "attempts by score", "attempts by exercise"],
)
def test_the_cursors_the_service_issues_walk_every_list(
    user: APIClient, lists: dict[str, str], name: str
) -> None:
    everything = user.get(lists[name]).json()["results"]
    seen = []
    response = user.get(lists[name], {"page_size": 1})
    while True:
        seen += response.json()["results"]
        if response.json()["next"] is None:
            break
        response = user.get(response.json()["next"])

    assert seen == everything
    assert len(seen) > 1


# --- Chunked request bodies ---------------------------------------------------------------------


def chunked_request(method: str, path: str, body: bytes, **headers: str) -> dict[str, Any]:
    """The WSGI environ a server gives for a chunked body: decoded bytes in ``wsgi.input``, no
    ``CONTENT_LENGTH``, the ``Transfer-Encoding`` header."""
    environ = RequestFactory().generic(method, path, content_type="application/json").environ
    environ.pop("CONTENT_LENGTH", None)
    environ.update(
        {
            "CONTENT_TYPE": "application/json",
            "HTTP_TRANSFER_ENCODING": "chunked",
            "wsgi.input": io.BytesIO(body),
            **{f"HTTP_{name.upper()}": value for name, value in headers.items()},
        }
    )
    return environ


def call_wsgi(environ: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    """Call the WSGI application as a server would; like Django's test client, without closing
    the test's database connection at the start of the request."""
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started.update(status=int(status.split()[0]), headers=dict(headers))

    request_started.disconnect(close_old_connections)
    try:
        body = b"".join(ChunkedBodies(WSGIHandler())(environ, start_response))
    finally:
        request_started.connect(close_old_connections)
    return started["status"], started["headers"], json.loads(body) if body else None


@pytest.fixture
def bearer(users_service: Any) -> str:
    return f"Bearer {users_service.user(USER_ID)}"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("PATCH", "/scores", {"exercise_id": 77, "correct": True}, 201),
        ("POST", "/scores", {"exercise_id": 77, "correct": True}, 201),
        ("PUT", "/scores/user/77", {"correct": True}, 201),
        ("PUT", "/scores/{id}", {"correct": True}, 200),
        ("PATCH", "/scores/{id}", {"correct": True}, 200),
    ],
)
def test_a_chunked_body_is_read_like_any_other(
    bearer: str, method: str, path: str, body: dict[str, Any], status: int
) -> None:
    score = ScoreFactory(user_id=USER_ID, exercise_id=5, correct=False)
    environ = chunked_request(
        method, path.format(id=score.id), json.dumps(body).encode(), authorization=bearer
    )

    answered, _, json_body = call_wsgi(environ)

    assert (answered, json_body["correct"]) == (status, True)
    assert Attempt.objects.count() == 1


def test_a_chunked_bulk_body_is_read_like_any_other(staff: APIClient) -> None:
    from rest_framework.authtoken.models import Token

    token = Token.objects.get().key
    body = {"scores": [{"user_id": 1, "exercise_id": 1, "correct": True}]}
    environ = chunked_request(
        "POST", "/scores/bulk", json.dumps(body).encode(), authorization=f"Token {token}"
    )

    assert call_wsgi(environ)[::2] == (200, {"created": 1, "updated": 0})


@pytest.mark.parametrize("path", ["/scores", "/scores/bulk", "/scores/user/7", "/nope"])
def test_a_chunked_body_over_the_limit_is_a_413_and_nothing_is_written(
    bearer: str, settings: Any, path: str
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"exercise_id": 7, "correct": True, "pad": "x" * 2000}).encode()

    status, headers, json_body = call_wsgi(
        chunked_request("PATCH", path, body, authorization=bearer)
    )

    assert (status, headers["Content-Type"], json_body) == (
        413,
        "application/json",
        {"detail": "The request body is larger than 1000 bytes."},
    )
    assert stored() == []


def test_a_body_with_its_length_is_left_as_it_is(bearer: str) -> None:
    environ = (
        RequestFactory()
        .patch("/scores", json.dumps({"exercise_id": 7, "correct": True}), "application/json")
        .environ
    )
    environ["HTTP_AUTHORIZATION"] = bearer

    assert call_wsgi(environ)[0] == 201


# --- Errors are JSON whatever Accept asks for ---------------------------------------------------

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
ACCEPTS = [BROWSER_ACCEPT, "text/html", "application/xml", "image/png", "text/csv", "*/*", ""]


@pytest.fixture
def error_of(user: APIClient, anon: APIClient, settings: Any) -> Callable[[str, str], Any]:
    """A request answered with the given error status."""
    score = ScoreFactory(user_id=USER_ID, exercise_id=1)
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100

    def send(status: str, accept: str) -> Any:
        headers = {"HTTP_ACCEPT": accept} if accept else {}
        make = {
            "400": lambda: user.patch("/scores", {"correct": 1}, format="json", **headers),
            "400-filter": lambda: user.get("/scores?exercise_id=abc", **headers),
            "401": lambda: anon.get("/scores", **headers),
            "403": lambda: user.post("/scores/bulk", {"scores": []}, format="json", **headers),
            "404": lambda: user.get("/scores/999999", **headers),
            "404-route": lambda: user.get("/nope", **headers),
            "405": lambda: user.delete("/scores", **headers),
            "409": lambda: user.post(
                "/scores", {"exercise_id": 1, "correct": True}, format="json", **headers
            ),
            "413": lambda: user.patch(
                "/scores", {"exercise_id": 1, "pad": "x" * 200}, format="json", **headers
            ),
            "415": lambda: user.generic(
                "PATCH", "/scores", "exercise_id=1", "text/plain", **headers
            ),
            "404-export": lambda: anon.get("/scores/export.csv", **headers),
        }[status]
        assert score.id
        return make()

    return send


@pytest.mark.parametrize("accept", ACCEPTS, ids=["browser", *ACCEPTS[1:-1], "none"])
@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("400", 400),
        ("400-filter", 400),
        ("401", 401),
        ("403", 403),
        ("404", 404),
        ("404-route", 404),
        ("405", 405),
        ("409", 409),
        ("413", 413),
        ("415", 415),
        ("404-export", 401),
    ],
)
def test_every_error_is_json_whatever_accept_asks_for(
    error_of: Callable[[str, str], Any], status: str, code: int, accept: str
) -> None:
    response = error_of(status, accept)

    assert response.status_code == code
    assert response["Content-Type"] == "application/json"
    assert isinstance(response.json()["detail"], str)


def test_a_browser_still_gets_the_browsable_api_for_a_success(staff: APIClient) -> None:
    response = staff.get("/scores", HTTP_ACCEPT=BROWSER_ACCEPT)

    assert (response.status_code, response["Content-Type"]) == (200, "text/html; charset=utf-8")


def test_a_success_asked_in_a_type_the_route_has_not_is_json(user: APIClient) -> None:
    response = user.get("/scores", HTTP_ACCEPT="image/png")

    assert (response.status_code, response["Content-Type"]) == (200, "application/json")


# --- Deeply nested JSON ---------------------------------------------------------------------------

DEEP_BODIES = {
    "4KB-of-arrays": "[" * 4096 + "]" * 4096,
    "unclosed-arrays": "[" * 4096,
    "nested-objects": '{"a":' * 3000 + "1" + "}" * 3000,
    "deep-field-value": '{"exercise_id": ' + "[" * 5000 + "]" * 5000 + ', "correct": true}',
    "deep-bulk-item": '{"scores": [' + "{" * 1 + '"user_id": ' + "[" * 5000 + "]" * 5000 + "}]}",
}


@pytest.mark.parametrize("body", DEEP_BODIES.values(), ids=DEEP_BODIES.keys())
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "/scores"),
        ("POST", "/scores"),
        ("PUT", "/scores/user/7"),
        ("PUT", "/scores/{id}"),
        ("PATCH", "/scores/{id}"),
        ("POST", "/scores/bulk"),
    ],
)
def test_json_nested_deeper_than_the_parser_follows_is_a_400(
    admin: APIClient, method: str, path: str, body: str
) -> None:
    score = ScoreFactory(user_id=1, exercise_id=5)

    response = admin.generic(method, path.format(id=score.id), body, "application/json")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert isinstance(response.json()["detail"], str)
    assert Attempt.objects.count() == 0


# --- Control characters where an id, a timestamp or a UUID is expected ----------------------------

CONTROL = ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x1f"]


@pytest.mark.parametrize("char", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("attempted_at", "2026-01-01T00:00:00{c}", "Must be an ISO 8601 timestamp"),
        ("attempted_at", "{c}2026-01-01T00:00:00Z", "Must be an ISO 8601 timestamp"),
        ("attempted_at", "2026-01-01{c}00:00:00Z", "Must be an ISO 8601 timestamp"),
        ("attempt_id", "3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b{c}", "Must be a UUID"),
        ("attempt_id", "{c}3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b", "Must be a UUID"),
        ("user_id", "4{c}", "Must be an integer."),
        ("reason", "Regraded{c}", "Must not contain control characters"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path", "base"),
    [
        ("patch", "/scores", {"exercise_id": 5, "correct": True}),
        ("post", "/scores", {"exercise_id": 5, "correct": True}),
        ("put", "/scores/user/5", {"correct": True}),
    ],
)
def test_a_control_character_in_a_body_field_is_a_400_naming_it(
    user: APIClient,
    method: str,
    path: str,
    base: dict[str, Any],
    field: str,
    value: str,
    message: str,
    char: str,
) -> None:
    response = getattr(user, method)(path, {**base, field: value.format(c=char)}, format="json")

    assert response.status_code == 400
    [error] = response.json()["errors"][field]
    assert error.startswith(message)
    assert stored() == []


@pytest.mark.parametrize("char", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("user_id", "5{c}"),
        ("user_id", "{c}5"),
        ("exercise_id", "5{c}"),
        ("updated_after", "2026-01-01T00:00:00Z{c}"),
        ("updated_before", "{c}2026-01-01"),
        ("correct", "true{c}"),
    ],
)
@pytest.mark.parametrize("path", ["/scores", "/scores/user", "/scores/export.csv"])
def test_a_control_character_in_a_filter_is_a_400_naming_it(
    staff: APIClient, path: str, parameter: str, value: str, char: str
) -> None:
    whose = "user_id=4&" if path == "/scores/user" and parameter != "user_id" else ""

    response = staff.get(f"{path}?{whose}{parameter}={quote(value.format(c=char))}")

    assert response.status_code == 400
    assert list(response.json()["errors"]) == [parameter]


@pytest.mark.parametrize("char", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
@pytest.mark.parametrize(
    "path",
    [
        "/scores/user/5{c}",
        "/scores/user/5{c}/attempts",
        "/scores/summary?user_id=5{c}",
        "/scores/user?user_id={c}5",
        "/scores/stats/exercises?exercise_id=5{c}",
        "/privacy/users/5{c}",
    ],
)
def test_a_control_character_in_a_path_or_query_id_is_a_400(
    admin: APIClient, path: str, char: str
) -> None:
    response = admin.get(path.format(c=quote(char)))

    assert response.status_code == 400
    assert list(response.json()["errors"]) in (["exercise_id"], ["user_id"])


@pytest.mark.parametrize("char", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
@pytest.mark.parametrize(
    ("column", "row"),
    [
        ("attempted_at", "4,3,true,2026-01-01T00:00:00Z{c},"),
        ("attempt_id", "4,3,true,,3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b{c}"),
        ("user_id", "4{c},3,true,,"),
        ("exercise_id", "4,{c}3,true,,"),
        ("correct", "4,3,true{c},,"),
    ],
)
def test_a_control_character_in_a_csv_cell_is_an_invalid_row_naming_the_column(
    tmp_path: Any, column: str, row: str, char: str
) -> None:
    from django.core.management import CommandError, call_command

    path = tmp_path / "scores.csv"
    # every cell quoted, as CSV writers do with a line break in one
    line = ",".join(f'"{part.format(c=char)}"' for part in row.split(","))
    path.write_text(f"user_id,exercise_id,correct,attempted_at,attempt_id\n{line}\n", newline="")
    err = io.StringIO()

    with pytest.raises(CommandError, match="1 invalid row"):
        call_command("import_scores", str(path), stdout=io.StringIO(), stderr=err)

    assert re.match(rf"line [23]: {column}: ", err.getvalue())
    assert Score.objects.count() == 0


@pytest.mark.parametrize("char", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
@pytest.mark.parametrize("field", ["attempted_at", "attempt_id", "user_id"])
def test_a_control_character_in_a_bulk_item_is_a_400_naming_item_and_field(
    staff: APIClient, field: str, char: str
) -> None:
    item = {
        "user_id": 4,
        "exercise_id": 3,
        "correct": True,
        "attempted_at": "2026-01-01T00:00:00Z",
        "attempt_id": str(uuid.uuid4()),
    }
    item[field] = f"{item[field]}{char}"

    response = staff.post("/scores/bulk", {"scores": [item]}, format="json")

    assert response.status_code == 400
    assert list(response.json()["errors"]["scores"]["0"]) == [field]


# --- OPTIONS advertises only what the caller may do -------------------------------------------


def advertised(client: APIClient, path: str) -> set[str]:
    response = client.options(path)
    assert response.status_code == 200
    return set(response.json().get("actions", {}))


@pytest.mark.parametrize(
    ("path", "caller", "methods"),
    [
        ("/scores/bulk", "user", set()),
        ("/scores/bulk", "admin", {"POST"}),
        ("/scores/bulk", "staff", {"POST"}),
        ("/scores", "user", {"POST"}),
        ("/scores", "staff", {"POST"}),
        ("/scores/user/7", "user", {"PUT"}),
    ],
)
def test_options_advertises_what_the_caller_may_do(
    request: pytest.FixtureRequest, path: str, caller: str, methods: set[str]
) -> None:
    assert advertised(request.getfixturevalue(caller), path) == methods


@pytest.mark.parametrize("path", ["/scores", "/scores/user/7", "/scores/bulk"])
def test_options_advertises_no_write_when_only_the_grader_writes(
    user: APIClient, staff: APIClient, settings: Any, path: str
) -> None:
    settings.SCORES_SELF_REPORT = False

    assert advertised(user, path) == set()
    assert advertised(staff, path) != set()
