from django.apps import AppConfig
from django.db.backends.signals import connection_created


class ScoresConfig(AppConfig):
    name = "scores"
    verbose_name = "Scores"

    def ready(self) -> None:
        from scores import admin_webhooks  # noqa: F401 (registers the webhook admin pages)
        from scores.database import use_iso_timestamps

        connection_created.connect(use_iso_timestamps, dispatch_uid="scores.iso_timestamps")
