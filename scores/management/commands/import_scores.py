"""Import scores from a CSV file through the write service, in batches, after checking every row."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, reset_queries
from tqdm import tqdm

from scores.csv_import import HEADER_HELP, BadFile, read_scores
from scores.models import Attempt
from scores.services import AttemptConflict, BulkWrite, Write, scores_upsert_many

DEFAULT_BATCH = 2000  # measured faster than 1000 (docs/admin-and-commands.md)
MAX_BATCH = 3000  # rows per transaction: a batch is one statement of a JSON array
MAX_LISTED = 1000  # invalid rows listed one by one; the rest are counted
RECORDED_BY_MAX = Attempt._meta.get_field("recorded_by").max_length or 150


class Command(BaseCommand):
    help = (
        "Import scores from FILE (CSV, UTF-8, header "
        f"{HEADER_HELP}). Every row is checked first, with the API's rules: ids are "
        "integers from 1 to 2147483647; correct is true, false, 1 or 0 (any case); "
        "attempted_at is ISO 8601, not in the future; attempt_id a UUID; empty optional values "
        "are absent; a (user_id, exercise_id) pair or an attempt_id may appear once. Bad rows "
        "are listed by line number and nothing is written, unless --skip-invalid. Rows are "
        "upserted in batches, each committed on its own, and logged as attempts recorded by "
        "'import:<file name>'."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", metavar="FILE", help="the CSV file to import")
        parser.add_argument(
            "--skip-invalid",
            action="store_true",
            help="import the valid rows and list the invalid ones, instead of writing nothing",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH,
            metavar="N",
            help=f"rows per transaction, 1 to {MAX_BATCH} (default {DEFAULT_BATCH})",
        )

    def handle(
        self, *args: Any, file: str, skip_invalid: bool, batch_size: int, **options: Any
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise CommandError(f"--batch-size must be from 1 to {MAX_BATCH}, not {batch_size}.")
        path = Path(file)
        invalid_lines, valid = self._check(path)
        if invalid_lines and not skip_invalid:
            raise CommandError(
                f"{path}: {len(invalid_lines)} invalid row(s), listed above; nothing written "
                "(fix them, or pass --skip-invalid to import the valid rows)."
            )
        result = self._write(path, invalid_lines, valid, batch_size)
        updated = result.updated - result.not_applied
        skipped = " (skipped)" if invalid_lines else ""
        self.stdout.write(
            f"Imported {path}: {result.created} created, {updated} updated, "
            f"{result.not_applied} not applied (older than the stored attempt), "
            f"{len(invalid_lines)} invalid{skipped}."
        )

    def _check(self, path: Path) -> tuple[set[int], int]:
        """Read the whole file once, list its invalid rows on stderr; return their line numbers
        and the number of valid rows."""
        invalid_lines: set[int] = set()
        valid = 0
        with (
            _open(path) as csv_file,
            tqdm(
                total=os.fstat(csv_file.fileno()).st_size,
                desc="checking",
                unit="B",
                unit_scale=True,
                file=sys.stderr,
                disable=None,  # only on a terminal
                leave=False,
            ) as bar,
        ):
            for line, fields in _rows(path, csv_file):
                if isinstance(fields, str):
                    if len(invalid_lines) < MAX_LISTED:
                        self.stderr.write(f"line {line}: {fields}")
                    invalid_lines.add(line)
                else:
                    valid += 1
                    if not valid % 8192:
                        bar.update(csv_file.buffer.tell() - bar.n)
        if len(invalid_lines) > MAX_LISTED:
            self.stderr.write(f"... and {len(invalid_lines) - MAX_LISTED} more invalid rows.")
        return invalid_lines, valid

    def _write(self, path: Path, invalid_lines: set[int], valid: int, batch_size: int) -> BulkWrite:
        """Read the file again and upsert its valid rows, ``batch_size`` per transaction. A
        reader thread parses the next batch while the database writes the current one."""
        recorded_by = f"import:{path.name}"[:RECORDED_BY_MAX]
        done = BulkWrite(created=0, updated=0)
        with (
            _open(path) as csv_file,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-reader") as reader,
            tqdm(
                total=valid,
                desc="importing",
                unit=" rows",
                file=sys.stderr,
                disable=None,
            ) as bar,
        ):
            rows = _rows(path, csv_file)

            def next_batch() -> tuple[list[int], list[Write]]:
                lines: list[int] = []
                writes: list[Write] = []
                for line, fields in rows:
                    if isinstance(fields, str):
                        if line not in invalid_lines:
                            raise CommandError(
                                f"{path} changed while it was imported (line {line} is now "
                                f"invalid); {done.created + done.updated} rows were imported."
                            )
                        continue
                    lines.append(line)
                    writes.append(fields)
                    if len(writes) == batch_size:
                        break
                return lines, writes

            upcoming = reader.submit(next_batch)
            while True:
                lines, writes = upcoming.result()
                if not writes:
                    return done
                upcoming = reader.submit(next_batch)
                result = self._write_batch(path, lines, writes, recorded_by, done)
                done = BulkWrite(
                    created=done.created + result.created,
                    updated=done.updated + result.updated,
                    not_applied=done.not_applied + result.not_applied,
                )
                bar.update(len(writes))
                reset_queries()  # under DEBUG, the log of every statement would only grow

    def _write_batch(
        self, path: Path, lines: list[int], writes: list[Write], recorded_by: str, done: BulkWrite
    ) -> BulkWrite:
        """Upsert one batch; its errors as one-line CommandErrors naming lines."""
        try:
            return scores_upsert_many(writes=writes, recorded_by=recorded_by)
        except AttemptConflict as exc:
            raise CommandError(
                f"{path}: line {lines[exc.index or 0]}: {exc}; nothing of its batch (lines "
                f"{lines[0]}-{lines[-1]}) was written, {done.created + done.updated} rows "
                "before it were."
            ) from exc
        except DatabaseError as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CommandError(
                f"{path}: lines {lines[0]}-{lines[-1]}: database error: {reason}; nothing of "
                f"this batch was written, {done.created + done.updated} rows before it were."
            ) from exc


def _open(path: Path) -> TextIO:
    try:
        return path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror or exc}.") from exc


def _rows(path: Path, csv_file: TextIO) -> Iterator[tuple[int, Write | str]]:
    """``read_scores`` with its problems as one-line CommandErrors naming the file."""
    try:
        yield from read_scores(csv_file)
    except BadFile as exc:
        raise CommandError(f"{path}: {exc}.") from exc
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path} is not UTF-8 text ({exc.reason}).") from exc
