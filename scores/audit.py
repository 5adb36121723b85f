"""The audit log: who did what beyond ordinary score writes, appended in the transaction that
does it, and protected against change by the database itself.

``record`` is the one way to write an entry; every path that deletes scores, erases a user,
issues or revokes an API token, edits a score in the admin or changes a webhook subscription
calls it. An entry is ``{at, actor, action, target, reason}``: ``actor`` from ``actor_of`` (an
API caller), ``account_actor`` (a Django account in the admin) or ``command_actor`` (a
management command); ``target`` names what was acted on by its ids (``score_target``,
``user_target``). Score values, token keys and webhook secrets never go into an entry.

Append-only: on PostgreSQL a statement trigger refuses every ``UPDATE`` and ``DELETE`` of
``audit_entries`` (``POSTGRESQL_GUARD``), unless the transaction has set
``evalsvc.audit_retention`` to ``on``, which only ``purge_audit`` (the retention command,
``manage.py purge_audit``) does, for its own ``DELETE``. ``TRUNCATE`` and DDL stay with the
table's owner (see SECURITY.md). On SQLite, triggers refuse both; the retention command drops
the delete guard for its transaction and puts it back.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, transaction
from django.utils import timezone

from scores.callers import Caller
from scores.models import AuditEntry
from scores.validation import InvalidValue, parse_reason

__all__ = [
    "ACTIONS",
    "account_actor",
    "actor_of",
    "command_actor",
    "purge_audit",
    "record",
    "record_each",
    "score_target",
    "user_target",
]

# The actions written so far (an entry may carry another: the list documents, it does not
# refuse).
ACTIONS = {
    "score.deleted": "a score deleted (API, admin, admin's delete selected)",
    "score.added": "a score created in the admin",
    "score.changed": "a score changed in the admin",
    "user.erased": "a user's scores and attempt log erased (API or erase_user)",
    "token.issued": "an API token issued (create_service_token or the admin)",
    "token.revoked": "an API token revoked (create_service_token --rotate or the admin)",
    "webhook.created": "a webhook subscription created",
    "webhook.changed": "a webhook subscription changed",
    "webhook.deleted": "a webhook subscription deleted",
    "audit.purged": "audit entries past their retention deleted (purge_audit)",
}


def record(actor: str, action: str, target: str, reason: str | None = "") -> AuditEntry:
    """Append one entry, in the caller's transaction if there is one (so that the change and
    its entry commit together).

    Args:
        actor: who, e.g. ``actor_of(caller)``; at most 200 characters.
        action: what, e.g. ``"webhook.created"`` (see ``ACTIONS``); at most 32 characters.
        target: what it was done to, by ids (``"webhook 3"``); never a secret or a score value.
        reason: why, as the actor said it (None or empty: none given).

    Raises:
        ValueError: a field empty or too long, or a reason the API would refuse (control
            characters).
    """
    entry = _entry(actor, action, target, reason)
    entry.save(force_insert=True)
    return entry


def record_each(actor: str, action: str, targets: Iterable[str], reason: str | None = "") -> None:
    """Append one entry per target, in one statement (``record``'s rules)."""
    AuditEntry.objects.bulk_create(_entry(actor, action, target, reason) for target in targets)


def _entry(actor: str, action: str, target: str, reason: str | None) -> AuditEntry:
    try:
        reason = parse_reason(reason or "") or ""
    except InvalidValue as exc:
        raise ValueError(f"reason: {exc}") from exc
    for name, value, limit in (
        ("actor", actor, 200),
        ("action", action, 32),
        ("target", target, 200),
    ):
        if not value or len(value) > limit:
            raise ValueError(f"{name} must be 1 to {limit} characters, not {len(value)}")
    return AuditEntry(actor=actor, action=action, target=target, reason=reason)


def actor_of(caller: Caller) -> str:
    """An API caller: ``user:<id>`` (a platform user) or ``staff:<username>`` (a Django staff or
    service account)."""
    if caller.user_id is not None:
        return f"user:{caller.user_id}"
    return f"staff:{caller.name}"


def account_actor(account: AbstractBaseUser | AnonymousUser) -> str:
    """A Django account (in the admin): ``staff:<username>``."""
    return f"staff:{account.get_username()}"


def command_actor(command: str) -> str:
    """A management command: ``command:<name> (<operating system user>)``."""
    try:
        who = getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment or the password database
        who = "unknown"
    return f"command:{command} ({who})"


def score_target(score: Mapping[str, Any]) -> str:
    """``score <id> (user <user_id>, exercise <exercise_id>)``."""
    return f"score {score['id']} (user {score['user_id']}, exercise {score['exercise_id']})"


def user_target(user_id: int) -> str:
    return f"user {user_id}"


# --- Append-only, by the database -----------------------------------------------------------

RETENTION_SETTING = "evalsvc.audit_retention"

POSTGRESQL_GUARD = f"""
CREATE OR REPLACE FUNCTION audit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('{RETENTION_SETTING}', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit_entries is append-only: % refused', TG_OP
        USING HINT = 'Entries past their retention are deleted by manage.py purge_audit.';
END $$;
DROP TRIGGER IF EXISTS audit_entries_append_only ON audit_entries;
CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only();
"""
POSTGRESQL_UNGUARD = """
DROP TRIGGER IF EXISTS audit_entries_append_only ON audit_entries;
DROP FUNCTION IF EXISTS audit_entries_append_only();
"""
SQLITE_NO_UPDATE = (
    "CREATE TRIGGER IF NOT EXISTS audit_entries_no_update BEFORE UPDATE ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only: UPDATE refused'); END"
)
SQLITE_NO_DELETE = (
    "CREATE TRIGGER IF NOT EXISTS audit_entries_no_delete BEFORE DELETE ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only: DELETE refused'); END"
)


def install_guard(schema_editor: Any) -> None:
    """Make ``audit_entries`` append-only (migration 0007)."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_GUARD, params=None)
    else:
        schema_editor.execute(SQLITE_NO_UPDATE, params=None)
        schema_editor.execute(SQLITE_NO_DELETE, params=None)


def remove_guard(schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_UNGUARD, params=None)
    else:
        schema_editor.execute("DROP TRIGGER IF EXISTS audit_entries_no_update", params=None)
        schema_editor.execute("DROP TRIGGER IF EXISTS audit_entries_no_delete", params=None)


PURGE_BATCH = 10_000  # entries per transaction: each delete stays well within the deadline


def purge_audit(*, older_than: timedelta, actor: str) -> int:
    """Delete the entries older than ``older_than`` (the retention command), in batches of
    ``PURGE_BATCH``, each its own transaction allowed past the guard; then record the purge
    itself. How many entries went.

    Raises:
        ValueError: ``older_than`` is less than a day.
    """
    if older_than < timedelta(days=1):
        raise ValueError("audit entries are kept at least a day")
    cutoff = timezone.now() - older_than
    purged = 0
    while deleted := _purge_batch(cutoff):
        purged += deleted
    record(
        actor,
        "audit.purged",
        f"{purged} entries before {cutoff.isoformat(timespec='seconds')}",
    )
    return purged


def _purge_batch(cutoff: datetime) -> int:
    batch = AuditEntry.objects.filter(at__lt=cutoff).order_by("id").values("id")[:PURGE_BATCH]
    ids = list(batch.values_list("id", flat=True))
    if not ids:
        return 0
    # The guard is lifted for this DELETE only, inside its transaction: on PostgreSQL by the
    # transaction-local setting (set back at once, in case this runs inside a longer
    # transaction), on SQLite by dropping the trigger (DDL is transactional there too).
    postgresql = connection.vendor == "postgresql"
    with transaction.atomic(), connection.cursor() as cursor:
        if postgresql:
            cursor.execute("SELECT set_config(%s, 'on', true)", [RETENTION_SETTING])
        else:
            cursor.execute("DROP TRIGGER IF EXISTS audit_entries_no_delete")
        deleted, _ = AuditEntry.objects.filter(id__in=ids).delete()
        if postgresql:
            cursor.execute("SELECT set_config(%s, 'off', true)", [RETENTION_SETTING])
        else:
            cursor.execute(SQLITE_NO_DELETE)
    return deleted
