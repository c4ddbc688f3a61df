from django.apps import AppConfig


class DerpsConfig(AppConfig):
    name = 'derps'

    def ready(self):
        from . import signals  # noqa: F401  (connects the post_save receiver)
