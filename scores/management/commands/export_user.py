"""Export everything stored about one user as JSON, as GET /privacy/users/{user_id} answers it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scores.privacy import user_export
from scores.validation import InvalidValue, parse_id_text


class Command(BaseCommand):
    help = (
        'Write user USER_ID\'s data as JSON ({"user_id", "scores", "attempts"}, as GET '
        "/privacy/users/{user_id} answers it) to standard output or to --output FILE, "
        "streamed: memory does not grow with the number of attempts. A file is written whole "
        "or not at all."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user_id", help="the platform user id (1 to 2147483647)")
        parser.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout")

    def handle(self, *args: Any, user_id: str, output: str | None, **options: Any) -> None:
        try:
            user = parse_id_text(user_id)
        except InvalidValue as exc:
            raise CommandError(f"user_id: {exc}") from exc
        chunks = user_export(user_id=user)
        if output is None:
            for chunk in chunks:
                self.stdout.write(chunk.decode(), ending="")
            self.stdout.write("")
            return
        path = Path(output)
        partial = path.with_name(f".{path.name}.partial")
        try:
            with partial.open("wb") as file:
                for chunk in chunks:
                    file.write(chunk)
            os.replace(partial, path)
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror or exc}") from exc
        finally:
            partial.unlink(missing_ok=True)
        self.stderr.write(f"Exported user {user} to {path}.")
