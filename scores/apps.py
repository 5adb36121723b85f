from django.apps import AppConfig


class ScoresConfig(AppConfig):
    name = "scores"
    verbose_name = "Scores"

    def ready(self) -> None:
        from scores import admin_webhooks  # noqa: F401 (registers the webhook admin pages)
