"""Reading the client's settings: SIDECAR_URL, SIDECAR_TOKEN and SIDECAR_BEACONS."""
import threading
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from .client import DEFAULT_URL, DEFAULTS, BeaconClient


def read_settings():
    """(url, token, options); url is None when beacons are switched off (``SIDECAR_URL = None``).
    Raises ImproperlyConfigured naming the setting at fault."""
    from django.conf import settings
    url = getattr(settings, 'SIDECAR_URL', DEFAULT_URL)
    token = getattr(settings, 'SIDECAR_TOKEN', None) or None
    options = dict(DEFAULTS)
    given = getattr(settings, 'SIDECAR_BEACONS', None) or {}
    if not isinstance(given, dict):
        raise ImproperlyConfigured('SIDECAR_BEACONS must be a dict, got %r' % (given,))
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured('SIDECAR_BEACONS: unknown key(s) %s (known: %s)' % (', '.join(map(repr, unknown)), ', '.join(DEFAULTS)))
    options.update(given)
    for key, value in options.items():
        if key == 'MEASUREMENT':
            if not isinstance(value, str) or not value:
                raise ImproperlyConfigured('SIDECAR_BEACONS[%r] must be a non-empty string, got %r' % (key, value))
            continue
        kind = int if key in ('QUEUE_SIZE', 'BATCH_SIZE') else (int, float)
        smallest = 0 if key == 'EXIT_TIMEOUT' else 1 if kind is int else 1e-3
        if isinstance(value, bool) or not isinstance(value, kind) or not value >= smallest:
            raise ImproperlyConfigured('SIDECAR_BEACONS[%r] must be %s >= %g, got %r'
                                       % (key, 'an integer' if kind is int else 'a number of seconds', smallest, value))
    if not url:
        return None, token, options
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ('http', 'https') or not parts.hostname:
        raise ImproperlyConfigured('SIDECAR_URL must be an http(s) URL such as %r, got %r' % (DEFAULT_URL, url))
    if token is not None and not isinstance(token, str):
        raise ImproperlyConfigured('SIDECAR_TOKEN must be a string')
    return url, token, options


_lock = threading.Lock()
_client = None
_made = False


def get_client():
    """The process's BeaconClient, made from the settings on first use; None when switched off."""
    global _client, _made
    if not _made:
        with _lock:
            if not _made:
                url, token, options = read_settings()
                _client = BeaconClient(url, token, **{key.lower(): value for key, value in options.items()}) if url else None
                _made = True
    return _client


def reset(**kwargs):
    """Makes the next get_client() read the settings again (connected to Django's setting_changed,
    so that ``override_settings(SIDECAR_URL=...)`` in the app's tests takes effect). The old client
    sends what it holds."""
    global _client, _made
    if kwargs.get('setting', 'SIDECAR_').startswith('SIDECAR_'):
        with _lock:
            old, _client, _made = _client, None, False
        if old is not None:
            old.flush(0)
