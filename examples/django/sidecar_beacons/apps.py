from django.apps import AppConfig
from django.core import checks


class SidecarBeaconsConfig(AppConfig):
    name = 'sidecar_beacons'
    verbose_name = 'metrics-sidecar beacons'

    def ready(self):
        from django.core.signals import setting_changed
        from .conf import reset
        checks.register(check_settings, 'sidecar_beacons')
        setting_changed.connect(reset, dispatch_uid='sidecar_beacons.reset')


def check_settings(app_configs=None, **kwargs):
    """``manage.py check`` (and runserver/migrate) report bad SIDECAR_* settings at start-up."""
    from django.core.exceptions import ImproperlyConfigured
    from .conf import read_settings
    try:
        read_settings()
    except ImproperlyConfigured as err:
        return [checks.Error(str(err), id='sidecar_beacons.E001')]
    return []
