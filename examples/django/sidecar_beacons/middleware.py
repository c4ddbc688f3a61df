"""BeaconMiddleware: one ``django_requests`` point per request, sent in the background."""
import logging
import time

from django.core.exceptions import MiddlewareNotUsed

from .client import now_ns
from .conf import get_client

# Any other method is tagged "other": a client inventing methods must not invent series.
METHODS = frozenset(('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE', 'CONNECT'))


def view_tag(request):
    """The URL name (with its namespaces), else the route pattern, else "unresolved" (a 404 no URL
    pattern matched, or a response a middleware gave before URL resolution). Never the path, so
    the number of series stays bounded whatever URLs clients try."""
    match = getattr(request, 'resolver_match', None)
    if match is None:
        return 'unresolved'
    if match.url_name:
        return match.view_name
    return getattr(match, 'route', None) or '/'


class BeaconMiddleware:
    """Put it first in MIDDLEWARE so that the duration covers the other middleware too.

    Tags ``view``, ``method``, ``status``; field ``duration_ms`` (float, until the response is
    returned: a streaming body is not included); timestamp: when the request started. The request
    only pays for two clock reads and a non-blocking queue put; everything else happens on the
    client's thread. With ``SIDECAR_URL = None`` Django drops the middleware at start-up.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.client = get_client()
        if self.client is None:
            raise MiddlewareNotUsed('SIDECAR_URL is None: no request beacons')

    def __call__(self, request):
        start_ns = now_ns()
        started = time.perf_counter()
        try:
            response = self.get_response(request)
        except Exception:
            self._record(request, 500, started, start_ns)
            raise
        self._record(request, response.status_code, started, start_ns)
        return response

    def _record(self, request, status, started, start_ns):
        try:
            method = request.method if request.method in METHODS else 'other'
            self.client.request_point(view_tag(request), method, status,
                                      (time.perf_counter() - started) * 1000.0, start_ns)
        except Exception:  # metrics must never break a request
            self.client._log('record', logging.ERROR, 'sidecar beacons: could not record a request', exc_info=True)
