"""manage.py import_scores and export_scores: CSV in through the write service, checked row by row
first; CSV out with the export endpoint's code."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from scores.management.commands import import_scores
from scores.models import Attempt, Score
from scores.services import Write, score_write
from scores.tests.helpers import iso

pytestmark = pytest.mark.django_db

HEADER = "id,user_id,exercise_id,correct,created_at,updated_at,points,max_points\n"
A1 = uuid.UUID("3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b")
A2 = uuid.UUID("0d7e6c2a-1b3f-4e5d-8a9b-c0d1e2f3a4b5")


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def run(command: str, *args: str) -> tuple[str, str]:
    """Run a command; return its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    call_command(command, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def csv_file(tmp_path: Path, text: str, name: str = "scores.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def stored() -> list[tuple[Any, ...]]:
    """Every score as (user_id, exercise_id, correct, attempts, last_attempted_at)."""
    return list(
        Score.objects.order_by("user_id", "exercise_id").values_list(
            "user_id", "exercise_id", "correct", "attempts", "last_attempted_at"
        )
    )


def logged() -> list[tuple[Any, ...]]:
    """The attempt log as (user_id, exercise_id, correct, attempted_at, recorded_by, attempt_id,
    applied), in the order written."""
    return list(
        Attempt.objects.order_by("id").values_list(
            "user_id",
            "exercise_id",
            "correct",
            "attempted_at",
            "recorded_by",
            "attempt_id",
            "applied",
        )
    )


# --- import_scores: good files ----------------------------------------------------------------


def test_import_stores_every_row_and_logs_an_attempt_for_each(tmp_path) -> None:
    path = csv_file(
        tmp_path,
        "user_id,exercise_id,correct,attempted_at,attempt_id\n"
        f"4,3,true,2026-01-02T03:04:05Z,{A1}\n"
        "4,7,FALSE,2026-01-02T03:04:06.5+01:00,\n"
        "5,3,1,2026-01-03T00:00:00,\n",
    )

    out, err = run("import_scores", path)

    assert out == (
        f"Imported {path}: 3 created, 0 updated, 0 not applied (older than the stored attempt), "
        "0 invalid.\n"
    )
    assert err == ""
    assert stored() == [
        (4, 3, True, 1, at(2026, 1, 2, 3, 4, 5)),
        (4, 7, False, 1, at(2026, 1, 2, 2, 4, 6, 500000)),
        (5, 3, True, 1, at(2026, 1, 3)),
    ]
    assert logged() == [
        (4, 3, True, at(2026, 1, 2, 3, 4, 5), "import:scores.csv", A1, True),
        (4, 7, False, at(2026, 1, 2, 2, 4, 6, 500000), "import:scores.csv", None, True),
        (5, 3, True, at(2026, 1, 3), "import:scores.csv", None, True),
    ]


def test_import_without_attempted_at_records_the_attempts_as_of_now(tmp_path) -> None:
    before = timezone.now()
    path = csv_file(tmp_path, "exercise_id,correct,user_id\n3,0,4\n", name="grades.csv")

    out, _ = run("import_scores", path)

    after = timezone.now()
    ((user_id, exercise_id, correct, attempts, last_attempted_at),) = stored()
    assert (user_id, exercise_id, correct, attempts) == (4, 3, False, 1)
    assert before <= last_attempted_at <= after
    assert [row[4] for row in logged()] == ["import:grades.csv"]
    assert out.startswith(f"Imported {path}: 1 created, 0 updated,")


def test_import_updates_existing_scores_and_counts_older_attempts_as_not_applied(
    tmp_path,
) -> None:
    score_write(
        write=Write(user_id=4, exercise_id=3, correct=False, attempted_at=at(2026, 1, 1)),
        recorded_by="grader",
    )
    score_write(
        write=Write(user_id=5, exercise_id=3, correct=True, attempted_at=at(2026, 3, 1)),
        recorded_by="grader",
    )
    path = csv_file(
        tmp_path,
        "user_id,exercise_id,correct,attempted_at\n"
        "4,3,true,2026-02-01T00:00:00Z\n"  # newer: applies
        "5,3,false,2026-02-01T00:00:00Z\n"  # older than the stored attempt: logged only
        "6,3,true,2026-02-01T00:00:00Z\n",
    )

    out, _ = run("import_scores", path)

    assert out == (
        f"Imported {path}: 1 created, 1 updated, 1 not applied (older than the stored attempt), "
        "0 invalid.\n"
    )
    assert stored() == [
        (4, 3, True, 2, at(2026, 2, 1)),
        (5, 3, True, 1, at(2026, 3, 1)),
        (6, 3, True, 1, at(2026, 2, 1)),
    ]
    assert [(row[0], row[2], row[4], row[6]) for row in logged()] == [
        (4, False, "grader", True),
        (5, True, "grader", True),
        (4, True, "import:scores.csv", True),
        (5, False, "import:scores.csv", False),
        (6, True, "import:scores.csv", True),
    ]


def test_importing_a_file_with_attempt_ids_again_changes_nothing(tmp_path) -> None:
    path = csv_file(
        tmp_path,
        f"user_id,exercise_id,correct,attempt_id\n4,3,true,{A1}\n5,3,false,{A2}\n",
    )
    run("import_scores", path)
    before = (stored(), logged())

    out, _ = run("import_scores", path)

    assert out == (
        f"Imported {path}: 0 created, 2 updated, 0 not applied (older than the stored attempt), "
        "0 invalid.\n"
    )
    assert (stored(), logged()) == before


@pytest.mark.parametrize("batch_size", ["1", "2", "3000"])
def test_import_in_batches_stores_the_same(tmp_path, batch_size) -> None:
    lines = "".join(
        f"{user},{exercise},{'true' if user % 2 else 'false'}\n"
        for user in (1, 2, 3)
        for exercise in (7, 8)
    )
    path = csv_file(tmp_path, "user_id,exercise_id,correct\n" + lines)

    out, _ = run("import_scores", path, "--batch-size", batch_size)

    assert out.startswith(f"Imported {path}: 6 created, 0 updated,")
    assert [row[:4] for row in stored()] == [
        (1, 7, True, 1),
        (1, 8, True, 1),
        (2, 7, False, 1),
        (2, 8, False, 1),
        (3, 7, True, 1),
        (3, 8, True, 1),
    ]
    assert len(logged()) == 6


def test_import_of_a_header_alone_writes_nothing(tmp_path) -> None:
    path = csv_file(tmp_path, "user_id,exercise_id,correct\n\n")

    out, _ = run("import_scores", path)

    assert out == (
        f"Imported {path}: 0 created, 0 updated, 0 not applied (older than the stored attempt), "
        "0 invalid.\n"
    )
    assert stored() == []


def test_import_reads_a_byte_order_mark_and_crlf_lines(tmp_path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfuser_id,exercise_id,correct\r\n4,3,TRUE\r\n")

    run("import_scores", str(path))

    assert [row[:3] for row in stored()] == [(4, 3, True)]


# --- import_scores: bad rows ------------------------------------------------------------------

FUTURE = iso(timezone.now() + timedelta(days=1))


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("x,3,true,", "user_id: Must be an integer."),
        ("4.0,3,true,", "user_id: Must be an integer."),
        (" 4,3,true,", "user_id: Must be an integer."),
        ("0,3,true,", "user_id: Must be an integer from 1 to 2147483647."),
        ("-4,3,true,", "user_id: Must be an integer from 1 to 2147483647."),
        ("4,2147483648,true,", "exercise_id: Must be an integer from 1 to 2147483647."),
        (",3,true,", "user_id: This field is required."),
        ("4,3,yes,", "correct: Must be true, false, 1 or 0 (any case)."),
        ("4,3,,", "correct: This field is required."),
        (
            "4,3,true,yesterday",
            "attempted_at: Must be an ISO 8601 timestamp, e.g. 2026-11-26T14:24:20Z.",
        ),
        (
            "4,3,true,2026-02-30T00:00:00Z",
            "attempted_at: Must be an ISO 8601 timestamp, e.g. 2026-11-26T14:24:20Z.",
        ),
        (f"4,3,true,{FUTURE}", "attempted_at: Must not be in the future."),
        ("4,3,true", "expected 4 values, got 3"),
        ("4,3,true,,", "expected 4 values, got 5"),
        (
            "a,b,c,d",
            "user_id: Must be an integer.; exercise_id: Must be an integer.; "
            "correct: Must be true, false, 1 or 0 (any case).; "
            "attempted_at: Must be an ISO 8601 timestamp, e.g. 2026-11-26T14:24:20Z.",
        ),
    ],
)
def test_import_of_a_file_with_a_bad_row_writes_nothing_and_names_the_line(
    tmp_path, row, reason
) -> None:
    path = csv_file(
        tmp_path,
        f"user_id,exercise_id,correct,attempted_at\n4,1,true,\n{row}\n5,1,false,\n",
    )
    err = io.StringIO()

    with pytest.raises(CommandError) as raised:
        call_command("import_scores", path, stdout=io.StringIO(), stderr=err)

    assert str(raised.value) == (
        f"{path}: 1 invalid row(s), listed above; nothing written (fix them, or pass "
        "--skip-invalid to import the valid rows)."
    )
    assert err.getvalue() == f"line 3: {reason}\n"
    assert stored() == []
    assert logged() == []


def test_import_of_a_bad_attempt_id_names_it(tmp_path) -> None:
    path = csv_file(tmp_path, "user_id,exercise_id,correct,attempt_id\n4,1,true,not-a-uuid\n")
    err = io.StringIO()

    with pytest.raises(CommandError):
        call_command("import_scores", path, stdout=io.StringIO(), stderr=err)

    assert err.getvalue() == (
        "line 2: attempt_id: Must be a UUID, e.g. 3f2b9c1e-8d4a-4b7e-9f1a-2c3d4e5f6a7b.\n"
    )


def test_import_refuses_a_repeated_pair_or_attempt_id_as_the_bulk_endpoint_does(
    tmp_path,
) -> None:
    path = csv_file(
        tmp_path,
        "user_id,exercise_id,correct,attempt_id\n"
        f"4,3,true,{A1}\n"
        "5,3,true,\n"
        "4,3,false,\n"  # the same (user, exercise) as line 2
        f"4,5,true,{A1}\n"  # the same attempt_id as line 2, for the same user
        f"6,3,true,{A1}\n",  # the same attempt_id for another user: another attempt
    )
    err = io.StringIO()

    with pytest.raises(CommandError, match="2 invalid row"):
        call_command("import_scores", path, stdout=io.StringIO(), stderr=err)

    assert err.getvalue() == (
        "line 4: same user_id and exercise_id as line 2\nline 5: same attempt_id as line 2\n"
    )
    assert stored() == []


def test_import_skip_invalid_writes_the_good_rows_and_lists_the_bad(tmp_path) -> None:
    path = csv_file(
        tmp_path,
        "user_id,exercise_id,correct\n4,3,true\nx,3,true\n4,3,false\n5,3,0\n",
    )

    out, err = run("import_scores", path, "--skip-invalid")

    assert err == (
        "line 3: user_id: Must be an integer.\nline 4: same user_id and exercise_id as line 2\n"
    )
    assert out == (
        f"Imported {path}: 2 created, 0 updated, 0 not applied (older than the stored attempt), "
        "2 invalid (skipped).\n"
    )
    assert [row[:4] for row in stored()] == [(4, 3, True, 1), (5, 3, False, 1)]  # the first kept


def test_import_lists_at_most_a_thousand_bad_rows(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(import_scores, "MAX_LISTED", 2)
    path = csv_file(tmp_path, "user_id,exercise_id,correct\n" + "x,1,true\n" * 5)
    err = io.StringIO()

    with pytest.raises(CommandError, match="5 invalid row"):
        call_command("import_scores", path, stdout=io.StringIO(), stderr=err)

    assert err.getvalue() == (
        "line 2: user_id: Must be an integer.\n"
        "line 3: user_id: Must be an integer.\n"
        "... and 3 more invalid rows.\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty; expected the header {h}."),
        ("user_id,exercise_id\n4,3\n", "missing column(s) correct in the header; expected {h}."),
        (
            "user_id,exercise_id,correct,score\n",
            "unknown column(s) 'score' in the header; expected {h}.",
        ),
        (
            "user_id,exercise_id,correct,user_id\n",
            "column(s) user_id appear more than once in the header.",
        ),
        ('user_id,exercise_id,correct\n4,3,"true\n', "line 2: unexpected end of data."),
    ],
)
def test_import_of_an_unreadable_file_is_a_one_line_error(tmp_path, text, message) -> None:
    path = csv_file(tmp_path, text)

    with pytest.raises(CommandError) as raised:
        run("import_scores", path)

    header = (
        "user_id,exercise_id,correct[,attempted_at][,attempt_id][,points][,max_points][,reason] "
        "(any order)"
    )
    assert str(raised.value) == f"{path}: " + message.format(h=header)
    assert stored() == []


def test_import_of_a_missing_file(tmp_path) -> None:
    with pytest.raises(CommandError) as raised:
        run("import_scores", str(tmp_path / "nope.csv"))

    assert str(raised.value) == f"Cannot read {tmp_path / 'nope.csv'}: No such file or directory."


def test_import_of_a_file_that_is_not_utf8(tmp_path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"user_id,exercise_id,correct\n4,3,tr\xfce\n")

    with pytest.raises(CommandError) as raised:
        run("import_scores", str(path))

    assert str(raised.value) == f"{path} is not UTF-8 text (invalid start byte)."


@pytest.mark.parametrize("size", ["0", "3001"])
def test_import_refuses_a_batch_size_out_of_range(tmp_path, size) -> None:
    path = csv_file(tmp_path, "user_id,exercise_id,correct\n4,3,true\n")

    with pytest.raises(CommandError) as raised:
        run("import_scores", path, "--batch-size", size)

    assert str(raised.value) == f"--batch-size must be from 1 to 3000, not {size}."


def test_import_stops_at_a_conflicting_attempt_id_naming_its_line(tmp_path) -> None:
    score_write(
        write=Write(user_id=7, exercise_id=9, correct=True, attempt_id=A2), recorded_by="grader"
    )
    path = csv_file(
        tmp_path,
        "user_id,exercise_id,correct,attempt_id\n"
        "4,3,true,\n"
        "5,3,true,\n"
        "6,3,true,\n"
        f"7,3,true,{A2}\n",  # logged already for user 7, for another exercise
    )

    with pytest.raises(CommandError) as raised:
        run("import_scores", path, "--batch-size", "2")

    assert str(raised.value) == (
        f"{path}: line 5: attempt_id already recorded with other exercise_id; nothing "
        "of its batch (lines 4-5) was written, 2 rows before it were."
    )
    assert [row[:2] for row in stored()] == [(4, 3), (5, 3), (7, 9)]


# --- export_scores ----------------------------------------------------------------------------


def expected_csv() -> str:
    return HEADER + "".join(
        f"{s.id},{s.user_id},{s.exercise_id},{'true' if s.correct else 'false'},"
        f"{iso(s.created_at)},{iso(s.updated_at)},,\n"
        for s in Score.objects.order_by("id")
    )


@pytest.fixture
def imported(tmp_path) -> None:
    path = csv_file(tmp_path, "user_id,exercise_id,correct\n4,3,true\n5,3,false\n4,7,0\n")
    run("import_scores", path)


def test_export_to_stdout_is_the_export_endpoint_csv(imported, django_user_model) -> None:
    grader = django_user_model.objects.create_user("grader", is_staff=True)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=grader).key}")

    out, err = run("export_scores")

    assert out == expected_csv()
    assert err == ""
    assert out == b"".join(api.get("/scores/export.csv").streaming_content).decode()
    assert len(out.splitlines()) == 4


def test_export_to_a_file(imported, tmp_path) -> None:
    target = tmp_path / "out.csv"

    out, err = run("export_scores", "--output", str(target))

    assert out == f"Exported 3 scores to {target}.\n"
    assert err == ""  # no progress bar off a terminal
    assert target.read_text() == expected_csv()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.csv", "scores.csv"]


def test_export_round_trip_imports_back_to_the_same_scores(imported, tmp_path) -> None:
    """Export, then import the export's user_id,exercise_id,correct columns elsewhere."""
    run("export_scores", "--output", str(tmp_path / "out.csv"))
    before = [row[:3] for row in stored()]
    lines = (tmp_path / "out.csv").read_text().splitlines()[1:]
    Score.objects.all().delete()
    reimport = csv_file(
        tmp_path,
        "user_id,exercise_id,correct\n"
        + "".join(",".join(line.split(",")[1:4]) + "\n" for line in lines),
        name="again.csv",
    )

    run("import_scores", reimport)

    assert [row[:3] for row in stored()] == before == [(4, 3, True), (4, 7, False), (5, 3, False)]


def test_export_of_no_scores_is_the_header(tmp_path) -> None:
    out, _ = run("export_scores")

    assert out == HEADER


def test_export_shows_a_progress_bar_on_a_terminal(imported, tmp_path, monkeypatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)

    run("export_scores", "--output", str(tmp_path / "out.csv"))

    assert "exporting: 100%" in terminal.getvalue()
    assert "3/3" in terminal.getvalue()


def test_export_to_an_unwritable_place_is_a_one_line_error(tmp_path) -> None:
    target = tmp_path / "missing" / "out.csv"

    with pytest.raises(CommandError) as raised:
        run("export_scores", "--output", str(target))

    assert str(raised.value) == (
        f"Cannot write {target.with_name('out.csv.partial')}: No such file or directory."
    )


# --- Help -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "phrases"),
    [
        (
            "import_scores",
            [
                "usage: manage.py import_scores [-h] [--skip-invalid] [--batch-size N]",
                "FILE",
                "user_id,exercise_id,correct[,attempted_at][,attempt_id]",
                "--skip-invalid",
                "rows per transaction, 1 to 3000 (default 2000)",
            ],
        ),
        (
            "export_scores",
            [
                "usage: manage.py export_scores [-h] [--output FILE]",
                "id,user_id,exercise_id,correct,created_at,updated_at",
                "--output FILE, -o FILE",
            ],
        ),
    ],
)
def test_help(command, phrases) -> None:
    """``manage.py COMMAND --help``, as an operator runs it."""
    manage = Path(__file__).resolve().parents[2] / "manage.py"

    done = subprocess.run(
        [sys.executable, str(manage), command, "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "100"},
    )

    assert (done.returncode, done.stderr) == (0, "")
    text = " ".join(done.stdout.split())
    for phrase in phrases:
        assert " ".join(phrase.split()) in text


# --- create_service_token ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("site", "admin"),
    [
        ([], "/admin/"),
        (["--site", "http://127.0.0.1:8055"], "http://127.0.0.1:8055/admin/"),
        (["--site", "https://scores.example.org/"], "https://scores.example.org/admin/"),
    ],
)
def test_create_service_token_prints_the_admin_login_where_the_service_is(
    site: list[str], admin: str, django_user_model: Any
) -> None:
    out = io.StringIO()
    call_command("create_service_token", "admin", "--with-password", *site, stdout=out)

    account = django_user_model.objects.get(username="admin")
    staff, login, token = out.getvalue().splitlines()
    assert staff == "Staff account: admin"
    url, _, credentials = login.removeprefix("Admin login:   ").partition("  ")
    assert url == admin
    name, _, password = credentials.partition(" / ")
    assert name == "admin"
    assert account.check_password(password)
    assert token == f"API token:     Authorization: Token {Token.objects.get(user=account).key}"
