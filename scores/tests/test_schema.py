"""The OpenAPI schema as a client generator and a reader of the docs meet it: an id, a tag and
examples for every operation, required fields as the service requires them, the headers the
service sends; and a client generated from it (openapi-python-client) calling the service."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from rest_framework.throttling import SimpleRateThrottle

from scores.schema import ERROR_EXAMPLES
from scores.tests.conftest import bearer_client

METHODS = ("get", "put", "post", "patch", "delete")


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_every_operation_has_a_meaningful_unique_id_and_a_tag(schema) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(schema)]

    assert len(ids) == len(set(ids))
    assert [i for i in ids if not re.fullmatch(r"[a-z]+(_[a-z]+)*", i) or "root" in i] == []
    assert [(m, p) for m, p, operation in operations(schema) if not operation.get("tags")] == []
    assert {tag["name"] for tag in schema["tags"]} >= {
        tag for _, _, operation in operations(schema) for tag in operation["tags"]
    }


def test_the_core_operations_have_the_ids_a_client_calls_them_by(schema) -> None:
    ids = {(m, p): operation["operationId"] for m, p, operation in operations(schema)}

    assert {key: ids.get(key) for key in CORE_IDS} == CORE_IDS


CORE_IDS = {
    ("GET", "/scores"): "scores_list",
    ("POST", "/scores"): "scores_create",
    ("PATCH", "/scores"): "scores_upsert",
    ("GET", "/scores/{id}"): "scores_retrieve",
    ("PUT", "/scores/{id}"): "scores_update",
    ("PATCH", "/scores/{id}"): "scores_partial_update",
    ("DELETE", "/scores/{id}"): "scores_destroy",
    ("GET", "/scores/{id}/attempts"): "scores_attempts_list",
    ("GET", "/scores/user"): "scores_user_list",
    ("GET", "/scores/user/{exercise_id}"): "scores_user_retrieve",
    ("PUT", "/scores/user/{exercise_id}"): "scores_user_upsert",
    ("GET", "/scores/user/{exercise_id}/attempts"): "scores_user_attempts_list",
    ("GET", "/scores/summary"): "scores_summary_retrieve",
    ("GET", "/scores/stats/exercises"): "scores_stats_exercises_list",
    ("POST", "/scores/bulk"): "scores_bulk_upsert",
    ("GET", "/scores/export.csv"): "scores_export_csv",
    ("GET", "/scores/ping"): "scores_ping",
    ("GET", "/health"): "health",
    ("GET", "/ready"): "ready",
}


def component(schema: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    ref = body["content"]["application/json"]["schema"]["$ref"]
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]


def test_the_upsert_body_requires_exercise_id_and_says_when_correct_is_needed(schema) -> None:
    upsert = schema["paths"]["/scores"]["patch"]
    body = component(schema, upsert["requestBody"])

    assert upsert["requestBody"]["required"] is True
    assert body["required"] == ["exercise_id"]
    assert body == component(schema, schema["paths"]["/scores"]["post"]["requestBody"])
    for text in (upsert["description"], body["description"]):
        assert "unless points and max_points are both given" in " ".join(
            text.replace("`", "").split()
        )
    assert body["properties"]["correct"] == {
        "type": "boolean",
        "description": body["properties"]["correct"]["description"],
    }


COUNTS = ("/components/schemas/Summary/", "/components/schemas/ExerciseStats/")


def test_correct_is_a_boolean_everywhere_never_a_string_enum(schema) -> None:
    """Everywhere but in the counts of correct scores (summary, statistics)."""
    found = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("name") == "correct" and "schema" in node:  # a query parameter
                found.append((where, node["schema"]))
            for key, value in node.items():
                if key == "correct" and isinstance(value, dict) and "type" in value:
                    found.append((where, value))
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(schema, "")
    found = [(where, s) for where, s in found if not where.startswith(COUNTS)]

    assert len(found) >= 8  # the list filters, the score, the attempt, the write bodies
    assert [(where, s) for where, s in found if s.get("type") != "boolean" or "enum" in s] == []


def test_every_request_body_and_answer_has_an_example(schema) -> None:
    missing = []
    for method, path, operation in operations(schema):
        bodies = [("request", operation.get("requestBody", {}))]
        bodies += [(status, answer) for status, answer in operation["responses"].items()]
        for name, body in bodies:
            for media_type, content in body.get("content", {}).items():
                if not content.get("examples"):
                    missing.append(f"{method} {path} {name} {media_type}")
    assert missing == []


def test_error_answers_show_what_the_service_says(schema) -> None:
    answer = schema["paths"]["/scores"]["patch"]["responses"]["409"]["content"]["application/json"]

    assert [example["value"] for example in answer["examples"].values()] == [ERROR_EXAMPLES[409]]


def test_every_answer_declares_the_headers_the_service_sends(schema) -> None:
    expected = {"401": {"WWW-Authenticate"}, "429": {"Retry-After"}, "503": {"Retry-After"}}
    wrong = [
        (method, path, status, sorted(answer.get("headers", {})))
        for method, path, operation in operations(schema)
        for status, answer in operation["responses"].items()
        if set(answer.get("headers", {})) != {"X-Request-ID", *expected.get(status, ())}
    ]
    assert wrong == []
    assert set(schema["components"]["headers"]) == {
        "X-Request-ID",
        "Retry-After",
        "WWW-Authenticate",
    }


@pytest.mark.django_db
def test_the_headers_declared_are_sent(anon, user, monkeypatch, settings) -> None:
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "1/hour", "anon": "9/hour"})

    unauthenticated = anon.get("/scores")
    user.get("/scores/user")
    throttled = user.get("/scores/user")
    settings.USERS_SERVICE_URL = ""
    unavailable = bearer_client("another-token").get("/scores/user")

    assert unauthenticated.status_code == 401
    assert unauthenticated["WWW-Authenticate"] == 'Bearer realm="evalsvc"'
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 0
    assert unavailable.status_code == 503
    assert int(unavailable["Retry-After"]) > 0
    for answer in (unauthenticated, throttled, unavailable):
        assert re.fullmatch(r"[0-9a-f]{32}", answer["X-Request-ID"])


def test_pagination_links_are_examples_of_this_service(schema) -> None:
    page = schema["components"]["schemas"]["PaginatedScoreList"]

    assert page["properties"]["next"]["example"].startswith("https://scores.example.com/scores?")
    assert "api.example.org" not in yaml.safe_dump(schema)


# --- A client generated from the schema ---------------------------------------------------

GENERATOR = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(GENERATOR is None, reason="openapi-python-client is in requirements/dev.txt")
@pytest.mark.django_db(transaction=True)  # the live server reads what the test wrote
def test_a_client_generated_from_the_schema_calls_the_service(
    schema, live_server, users_service, tmp_path
) -> None:
    spec = tmp_path / "schema.yaml"
    spec.write_text(yaml.safe_dump(schema))
    generated = subprocess.run(
        [GENERATOR, "generate", "--path", str(spec), "--output-path", str(tmp_path / "client")],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
    )
    assert "Warning" not in generated.stdout + generated.stderr  # nothing of the schema skipped
    package = tmp_path / "client" / "evalsvc_client"
    assert (package / "api" / "scores" / "scores_upsert.py").is_file()
    token = users_service.user(4)

    script = f"""
import json
from evalsvc_client import AuthenticatedClient
from evalsvc_client.api.scores import scores_upsert, scores_user_retrieve
from evalsvc_client.models import ScoreWriteRequest

client = AuthenticatedClient(base_url={live_server.url!r}, token={token!r}, timeout=10)
created = scores_upsert.sync_detailed(
    client=client, body=ScoreWriteRequest(exercise_id=5, correct=True)
)
read = scores_user_retrieve.sync(client=client, exercise_id=5)
print(json.dumps([int(created.status_code), created.parsed.to_dict(), read.to_dict()]))
"""
    ran = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path / "client",
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )

    status, created, read = yaml.safe_load(ran.stdout)
    assert status == 201
    assert created == read
    assert {key: created[key] for key in ("user_id", "exercise_id", "correct", "attempts")} == {
        "user_id": 4,
        "exercise_id": 5,
        "correct": True,
        "attempts": 1,
    }
