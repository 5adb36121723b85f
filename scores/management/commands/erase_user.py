"""Erase everything stored about one user (the right to erasure), as DELETE
/privacy/users/{user_id} does, recorded in the audit log with the reason given."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scores import audit
from scores.privacy import user_erase
from scores.validation import InvalidValue, parse_id_text, parse_reason


class Command(BaseCommand):
    help = (
        "Erase user USER_ID's scores (each a score.deleted event; the statistics follow), "
        "their whole attempt log, their earlier events and the admin's change history of "
        "their scores, in one transaction; recorded in the audit log with --reason. Erasing a "
        "user with nothing stored erases nothing and says so."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user_id", help="the platform user id (1 to 2147483647)")
        parser.add_argument(
            "--reason",
            required=True,
            help="why (e.g. the erasure request's reference), at most 500 characters; kept in "
            "the audit log",
        )

    def handle(self, *args: Any, user_id: str, reason: str, **options: Any) -> None:
        try:
            user = parse_id_text(user_id)
        except InvalidValue as exc:
            raise CommandError(f"user_id: {exc}") from exc
        try:
            given = parse_reason(reason)
        except InvalidValue as exc:
            raise CommandError(f"--reason: {exc}") from exc
        if given is None:
            raise CommandError("--reason: give one (it is kept in the audit log).")
        erasure = user_erase(user_id=user, actor=audit.command_actor("erase_user"), reason=given)
        self.stdout.write(
            f"Erased user {user}: {erasure.scores_deleted} scores, "
            f"{erasure.attempts_deleted} attempts."
        )
