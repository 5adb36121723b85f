"""Create a staff account with a DRF API token, e.g. for the grading service; the token issued
(and the one it replaces) are written to the audit log, by account name, never the key."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from rest_framework.authtoken.models import Token

from scores import audit


class Command(BaseCommand):
    help = (
        "Create staff account NAME and print its API token (shown once). "
        "Use it as 'Authorization: Token <key>'."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="username of the staff/service account")
        parser.add_argument(
            "--rotate",
            action="store_true",
            help="if the account exists, replace its token (the old one stops working)",
        )
        parser.add_argument(
            "--with-password",
            action="store_true",
            help="also set a fresh random password for the admin login and print it",
        )
        parser.add_argument(
            "--site",
            default="",
            help="the service's base URL (e.g. http://127.0.0.1:8000), to print the admin's",
        )

    def handle(
        self,
        *args: Any,
        name: str,
        rotate: bool,
        with_password: bool,
        site: str = "",
        **options: Any,
    ) -> None:
        account, created = get_user_model().objects.get_or_create(
            username=name, defaults={"is_staff": True, "is_superuser": with_password}
        )
        if not created and not rotate:
            raise CommandError(f"Account {name!r} exists; pass --rotate to issue a new token.")
        if not account.is_staff:
            raise CommandError(f"Account {name!r} exists and is not staff; refusing to change it.")
        if with_password:
            password = secrets.token_urlsafe(12)
            account.set_password(password)
            account.save(update_fields=["password"])
        actor, target = audit.command_actor("create_service_token"), f"token of account {name}"
        with transaction.atomic():  # the token and its audit entries together
            revoked, _ = Token.objects.filter(user=account).delete()
            if revoked:
                audit.record(actor, "token.revoked", target)
            token = Token.objects.create(user=account)
            audit.record(actor, "token.issued", target)
        self.stdout.write(f"Staff account: {name}")
        if with_password:
            admin = f"{site.rstrip('/')}/admin/" if site else "/admin/"
            self.stdout.write(f"Admin login:   {admin}  {name} / {password}")
        self.stdout.write(f"API token:     Authorization: Token {token.key}")
