"""Export every score as CSV, streamed like ``GET /scores/export.csv``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from tqdm import tqdm

from scores.csv_export import CSV_HEADER, csv_chunks
from scores.models import Score
from scores.selectors import scores_for_export


class Command(BaseCommand):
    help = (
        f"Write every score as CSV ({CSV_HEADER.strip()}), in id order, to stdout or to "
        "--output FILE, streamed in constant memory with the code of GET /scores/export.csv. "
        "A file is written as FILE.partial and renamed when complete."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--output",
            "-o",
            metavar="FILE",
            help="write to FILE (with a progress bar on stderr) instead of stdout",
        )

    def handle(self, *args: Any, output: str | None, **options: Any) -> None:
        rows = scores_for_export(Score.objects.all())
        try:
            if output is None:
                self._to_stdout(csv_chunks(rows))
            else:
                written = self._to_file(Path(output), csv_chunks(rows))
                self.stdout.write(f"Exported {written} scores to {output}.")
        except DatabaseError as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CommandError(f"Database error: {reason}") from exc

    def _to_stdout(self, chunks: Iterator[bytes]) -> None:
        try:
            for chunk in chunks:
                self.stdout.write(chunk.decode(), ending="")
            self.stdout.flush()
        except BrokenPipeError:  # e.g. `| head`: the reader has what it wanted
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # no second error when Python exits

    def _to_file(self, path: Path, chunks: Iterator[bytes]) -> int:
        """Write ``chunks`` to ``path`` through ``path.partial``; return the rows written."""
        partial = path.with_name(path.name + ".partial")
        progress = sys.stderr.isatty()
        written = 0
        try:
            with (
                partial.open("wb") as csv_file,
                tqdm(
                    total=Score.objects.count() if progress else None,
                    desc="exporting",
                    unit=" rows",
                    file=sys.stderr,
                    disable=not progress,
                ) as bar,
            ):
                csv_file.write(next(chunks))  # the header
                for chunk in chunks:
                    csv_file.write(chunk)
                    lines = chunk.count(b"\n")
                    written += lines
                    bar.update(lines)
            partial.replace(path)
        except OSError as exc:
            raise CommandError(f"Cannot write {exc.filename or path}: {exc.strerror}.") from exc
        finally:
            partial.unlink(missing_ok=True)
        return written
