"""Metric beacons from a Django app to metrics-sidecar (``POST /beacons``), standard library only.

- ``sidecar_beacons.middleware.BeaconMiddleware``: one ``django_requests`` point per request.
- ``sidecar_beacons.send(measurement, tags, fields, timestamp)``: a custom beacon.
- ``sidecar_beacons.Int(n)``: an integer field (a bare int or float is written as a float).

Sending happens on a background thread; a request never waits on the sidecar. See README.md.
"""
from .client import Int, integer, make_beacon
from .conf import get_client

__all__ = ['Int', 'integer', 'send', 'flush', 'stats', 'get_client', 'make_beacon']


def send(measurement, tags=None, fields=None, timestamp=None):
    """Queues one beacon for the sidecar and returns at once.

    - ``tags``: dict of strings (other values are turned into strings);
    - ``fields``: dict of floats (bare ``int`` too), ``Int(n)`` integers, bools and strings;
    - ``timestamp``: a ``datetime`` (naive ones in Django's current time zone), epoch
      milliseconds, or an RFC 3339 string; default: now, in nanoseconds.

    Returns True when queued, False when dropped (beacons switched off, or the queue full).
    Raises TypeError/ValueError only for arguments no sidecar would accept, never because of
    the sidecar: delivery problems are logged (at most once a minute) and counted in ``stats()``.
    """
    beacon = make_beacon(measurement, tags, fields, timestamp)
    client = get_client()
    return False if client is None else client.put(beacon)


def flush(timeout=5.0):
    """Waits up to ``timeout`` seconds for the queued beacons to be sent; True if they were.
    Only for scripts and management commands that want their beacons out before going on:
    at interpreter exit this happens by itself (``EXIT_TIMEOUT``)."""
    client = get_client()
    return True if client is None else client.flush(timeout)


def stats():
    """The client's counters: ``sent``, ``retries``, ``waiting``, ``dropped`` by reason
    (``queue_full``, ``rejected`` by the sidecar, ``exit``); empty when switched off."""
    client = get_client()
    return {} if client is None else client.stats()
