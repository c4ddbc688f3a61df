"""The beacon client: a bounded queue, one daemon thread, batched POSTs to metrics-sidecar.

Nothing here blocks the caller or raises in it because of the sidecar: a beacon is put on a
bounded queue (or dropped and counted when the queue is full), and one background thread sends
what is queued as JSON arrays to ``POST /beacons``. A sidecar that is down, slow or busy only
ever delays or drops beacons, never a request.
"""
import atexit
import http.client
import json
import logging
import math
import numbers
import os
import queue
import threading
import time
import urllib.error
import urllib.request
import weakref
from datetime import datetime, timezone as dt_timezone
from decimal import Decimal

logger = logging.getLogger('sidecar_beacons')

DEFAULT_URL = 'http://127.0.0.1:8186'

#: ``settings.SIDECAR_BEACONS`` keys and their defaults.
DEFAULTS = {
    'QUEUE_SIZE': 10_000,      # beacons waiting to be sent; past it new ones are dropped, and counted
    'BATCH_SIZE': 500,         # beacons per POST at most (keep it below the sidecar's BUFFER_POINTS)
    'FLUSH_INTERVAL': 1.0,     # seconds a beacon waits at most for its batch to fill
    'TIMEOUT': 2.0,            # seconds one POST may take
    'MAX_BACKOFF': 30.0,       # longest wait between two tries while the sidecar is unreachable
    'EXIT_TIMEOUT': 2.0,       # seconds spent at interpreter exit delivering what is still queued
    'LOG_INTERVAL': 60.0,      # at most one log line per kind of trouble per this many seconds
    'MEASUREMENT': 'django_requests',  # the middleware's measurement
}

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
# Beyond this a JSON number loses digits in the sidecar (JavaScript numbers); such integers go as strings.
MAX_SAFE_INTEGER = 2 ** 53 - 1
RESERVED_KEYS = frozenset(('time', '_field', '_measurement'))


class Int(int):
    """An integer field value: ``fields={'uploads': Int(1)}`` is sent as ``{"int": 1}`` and written
    to InfluxDB as ``uploads=1i``. A bare Python ``int`` is sent as a JSON number, which the
    sidecar writes as a float, so one field never mixes the two types (InfluxDB refuses that)."""

    __slots__ = ()

    def __repr__(self):
        return 'Int(%d)' % self


def integer(n):
    """``{"int": n}``, the sidecar's marking of an integer field, for code that builds beacon dicts
    itself. Integers beyond 2**53 are sent as a string of digits, which the sidecar also accepts."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError('an integer field needs an int, got %r' % (n,))
    n = int(n)
    if not INT64_MIN <= n <= INT64_MAX:
        raise ValueError('%d does not fit a 64-bit integer field' % n)
    return {'int': n if -MAX_SAFE_INTEGER <= n <= MAX_SAFE_INTEGER else str(n)}


def _field_value(key, value):
    if isinstance(value, Int):
        return integer(value)
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (numbers.Real, Decimal)):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError('field %r: %r is not a finite number' % (key, value))
        return value
    if isinstance(value, dict) and set(value) == {'int'}:
        n = value['int']
        if isinstance(n, str) and n.lstrip('-').isdigit():
            n = int(n)
        return integer(n)
    raise TypeError('field %r: %r is not a float, Int, bool or str' % (key, value))


def _names(kind, names):
    for key in names:
        if not isinstance(key, str) or not key:
            raise TypeError('%s keys must be non-empty strings, got %r' % (kind, key))
        if key in RESERVED_KEYS:
            raise ValueError('%s key %r is reserved by InfluxDB' % (kind, key))


def rfc3339(ns):
    """Epoch nanoseconds as an RFC 3339 UTC time with nine fractional digits."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds)) + '.%09dZ' % fraction


def _timestamp(value):
    if value is None:
        return rfc3339(now_ns())
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            from django.utils import timezone  # naive: in Django's current time zone, as Django reads it
            value = timezone.make_aware(value)
        return value.astimezone(dt_timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')
    if isinstance(value, bool):
        raise TypeError('timestamp: %r is not a time' % (value,))
    if isinstance(value, numbers.Real):  # epoch milliseconds, as the sidecar reads JSON numbers
        if not math.isfinite(value):
            raise ValueError('timestamp: %r is not a time' % (value,))
        return int(round(value))
    if isinstance(value, str):
        return value  # RFC 3339; the sidecar checks it
    raise TypeError('timestamp: %r is not a datetime, epoch milliseconds or an RFC 3339 string' % (value,))


def make_beacon(measurement, tags=None, fields=None, timestamp=None):
    """The JSON beacon for these arguments; TypeError/ValueError for what no sidecar would accept."""
    if not isinstance(measurement, str) or not measurement:
        raise TypeError('measurement must be a non-empty string, got %r' % (measurement,))
    if not fields:
        raise ValueError('a beacon needs at least one field')
    _names('field', fields)
    beacon = {'measurement': measurement}
    if tags:
        _names('tag', tags)
        beacon['tags'] = {key: str(value) for key, value in tags.items()}
    beacon['fields'] = {key: _field_value(key, value) for key, value in fields.items()}
    beacon['timestamp'] = _timestamp(timestamp)
    return beacon


class _Clock:
    """Epoch nanoseconds, strictly increasing within the process: two points of one series never
    share a timestamp (InfluxDB would keep only the last), even when requests start in the same
    millisecond or the system clock is coarse."""

    def __init__(self):
        self._lock = threading.Lock()
        self._last = 0

    def now_ns(self):
        ns = time.time_ns()
        with self._lock:
            if ns <= self._last:
                ns = self._last + 1
            self._last = ns
        return ns


_clock = _Clock()


def now_ns():
    return _clock.now_ns()


class _Throttled:
    """Logs one line per kind of trouble per interval, then says how many were left out."""

    def __init__(self, interval):
        self.interval = interval
        self._lock = threading.Lock()
        self._last = {}
        self._left_out = {}

    def __call__(self, kind, level, message, *args, **kwargs):
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._left_out[kind] = self._left_out.get(kind, 0) + 1
                return
            self._last[kind] = now
            left_out = self._left_out.pop(kind, 0)
        if left_out:
            message += ' (%d more like this in the last %g s)' % (left_out, self.interval)
        logger.log(level, message, *args, **kwargs)


def _retry_after(value):
    """Retry-After in seconds (the sidecar sends seconds); None when absent or not a number."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


_FLUSH = object()  # queue sentinel: send what you hold now
_clients = weakref.WeakSet()


class BeaconClient:
    """Queues beacons and sends them from one daemon thread; see the module docstring."""

    def __init__(self, url=DEFAULT_URL, token=None, *, queue_size=DEFAULTS['QUEUE_SIZE'],
                 batch_size=DEFAULTS['BATCH_SIZE'], flush_interval=DEFAULTS['FLUSH_INTERVAL'],
                 timeout=DEFAULTS['TIMEOUT'], max_backoff=DEFAULTS['MAX_BACKOFF'],
                 exit_timeout=DEFAULTS['EXIT_TIMEOUT'], log_interval=DEFAULTS['LOG_INTERVAL'],
                 measurement=DEFAULTS['MEASUREMENT']):
        self.url = url.rstrip('/')
        self.endpoint = self.url + '/beacons'
        self.headers = {'Content-Type': 'application/json', 'User-Agent': 'sidecar-beacons (Django)'}
        if token:
            self.headers['Authorization'] = 'Token ' + token
        self.queue_size = int(queue_size)
        self.batch_size = int(batch_size)
        self.flush_interval = float(flush_interval)
        self.timeout = float(timeout)
        self.max_backoff = float(max_backoff)
        self.exit_timeout = float(exit_timeout)
        self.measurement = measurement
        # The sidecar is beside the app: never route it through an HTTP(S)_PROXY from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._log = _Throttled(float(log_interval))
        self._reset()
        _clients.add(self)
        atexit.register(self.close)

    def _reset(self):
        """Fresh state: at start, and in a forked child (the parent's thread does not exist there,
        and its queue's locks may be held; the parent still sends what it had queued)."""
        self._queue = queue.Queue(self.queue_size)
        self._thread = None
        self._start_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._closing = None  # monotonic deadline once the interpreter is exiting
        self._closed = threading.Event()  # cuts a backoff short at exit
        self._unreachable = False
        self._stats = {'sent': 0, 'retries': 0,
                       'dropped': {'queue_full': 0, 'rejected': 0, 'exit': 0}}

    # -- the caller's side: never blocks, never raises for delivery reasons --------------------

    def put(self, beacon):
        """Queues a beacon (a dict, or the middleware's tuple); False when it was dropped."""
        if self._thread is None:
            self._start()
        try:
            self._queue.put_nowait(beacon)
        except queue.Full:
            with self._count_lock:
                self._stats['dropped']['queue_full'] += 1
            self._log('queue_full', logging.WARNING,
                      'sidecar beacons: queue full (%d), dropping beacons until %s catches up',
                      self.queue_size, self.url)
            return False
        return True

    def request_point(self, view, method, status, duration_ms, start_ns):
        """The middleware's point, queued as a tuple: the dict and the time string are made on the
        sending thread, not in the request."""
        return self.put((view, method, status, duration_ms, start_ns))

    def send(self, measurement, tags=None, fields=None, timestamp=None):
        return self.put(make_beacon(measurement, tags, fields, timestamp))

    def stats(self):
        """Counters: sent, retries, dropped by reason, and beacons waiting now."""
        with self._count_lock:
            stats = dict(self._stats, dropped=dict(self._stats['dropped']))
        stats['waiting'] = self._queue.unfinished_tasks
        return stats

    def flush(self, timeout=5.0):
        """Waits up to `timeout` seconds until everything queued is sent (or given up); True if so."""
        if self._thread is None:
            return True
        try:
            self._queue.put_nowait(_FLUSH)
        except queue.Full:
            pass  # a full queue is being sent in full batches anyway
        deadline = time.monotonic() + timeout
        done = self._queue.all_tasks_done
        with done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                done.wait(remaining)
        return True

    def close(self, timeout=None):
        """At interpreter exit (atexit): delivers what is queued for up to EXIT_TIMEOUT seconds,
        trying each remaining batch once; what is left then is dropped, counted and logged."""
        if self._thread is None or self._closing is not None:
            return True
        timeout = self.exit_timeout if timeout is None else timeout
        self._closing = time.monotonic() + timeout
        self._closed.set()
        before = self._stats['dropped']['exit']
        self.flush(timeout)
        lost = self._stats['dropped']['exit'] - before + self._queue.unfinished_tasks
        if lost:
            logger.warning('sidecar beacons: %d beacon(s) not delivered to %s at exit', lost, self.url)
        return lost == 0

    # -- the sending thread ------------------------------------------------------------------

    def _start(self):
        with self._start_lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, args=(self._queue,), name='sidecar-beacons', daemon=True)
            try:
                thread.start()
            except RuntimeError:  # the interpreter is shutting down
                return
            self._thread = thread

    def _run(self, q):
        while True:
            item = q.get()
            taken = 1
            batch = []
            try:
                deadline = time.monotonic() + self.flush_interval
                while item is not _FLUSH:
                    batch.append(item)
                    if len(batch) >= self.batch_size:
                        break
                    remaining = deadline - time.monotonic()
                    try:
                        item = q.get_nowait() if remaining <= 0 or self._closing is not None else q.get(timeout=remaining)
                    except queue.Empty:
                        break
                    taken += 1
                if batch:
                    self._deliver([self._beacon(b) for b in batch])
            except Exception:  # a bug here must not end the thread
                self._count('rejected', len(batch), dropped=True)
                self._log('bug', logging.ERROR, 'sidecar beacons: unexpected error; %d beacon(s) lost', len(batch), exc_info=True)
            finally:
                for _ in range(taken):
                    q.task_done()

    def _beacon(self, item):
        if isinstance(item, tuple):
            view, method, status, duration_ms, start_ns = item
            return {'measurement': self.measurement,
                    'tags': {'view': view, 'method': method, 'status': str(status)},
                    'fields': {'duration_ms': float(duration_ms)},
                    'timestamp': rfc3339(start_ns)}
        return item

    def _count(self, key, n, dropped=False):
        with self._count_lock:
            if dropped:
                self._stats['dropped'][key] += n
            else:
                self._stats[key] += n

    def _deliver(self, beacons):
        body = json.dumps(beacons, separators=(',', ':'), ensure_ascii=False, allow_nan=False).encode('utf-8')
        backoff = 0.5
        while True:
            if self._closing is not None and time.monotonic() >= self._closing:
                self._count('exit', len(beacons), dropped=True)
                return
            status, detail, retry_after = self._post(body)
            if status is not None and 200 <= status < 300:
                self._count('sent', len(beacons))
                if self._unreachable:
                    self._unreachable = False
                    logger.info('sidecar beacons: %s takes beacons again', self.url)
                return
            if status in (400, 413, 422) and len(beacons) > 1:
                # The sidecar takes a request whole or not at all: halve until the bad beacon stands alone.
                half = len(beacons) // 2
                self._deliver(beacons[:half])
                self._deliver(beacons[half:])
                return
            if status is not None and status < 500 and status not in (408, 429):
                self._count('rejected', len(beacons), dropped=True)
                hint = ' (check SIDECAR_TOKEN)' if status in (401, 403) else ''
                self._log('rejected', logging.ERROR, 'sidecar beacons: %s refused %d beacon(s): HTTP %d %s%s',
                          self.url, len(beacons), status, detail, hint)
                return
            # Unreachable, timed out, busy (429) or failing (5xx): keep the batch and try again later.
            if self._closing is not None:
                self._count('exit', len(beacons), dropped=True)
                return
            delay = retry_after if status == 429 and retry_after is not None else backoff
            delay = min(delay, self.max_backoff)
            backoff = min(backoff * 2, self.max_backoff)
            self._unreachable = True
            self._count('retries', 1)
            what = 'busy (HTTP 429)' if status == 429 else ('HTTP %d %s' % (status, detail) if status else detail)
            self._log('unreachable', logging.WARNING,
                      'sidecar beacons: %s not taking beacons: %s; retrying in %.1f s (requests are not affected)',
                      self.url, what, delay)
            self._closed.wait(delay)

    def _post(self, body):
        """(status, detail, retry_after); status None when no HTTP answer came."""
        timeout = self.timeout
        if self._closing is not None:
            timeout = max(0.05, min(timeout, self._closing - time.monotonic()))
        request = urllib.request.Request(self.endpoint, data=body, headers=self.headers, method='POST')
        try:
            with self._opener.open(request, timeout=timeout) as response:
                response.read()
                return response.status, None, None
        except urllib.error.HTTPError as err:
            with err:
                text = err.read(2000).decode('utf-8', 'replace')
                retry_after = _retry_after(err.headers.get('Retry-After'))
            try:
                text = json.loads(text)['message']
            except (ValueError, KeyError, TypeError):
                pass
            return err.code, text, retry_after
        except (OSError, http.client.HTTPException) as err:  # URLError, refused, reset, timeout
            return None, str(getattr(err, 'reason', None) or err or type(err).__name__), None


def _after_fork_in_child():
    global _clock
    _clock = _Clock()
    for client in list(_clients):
        client._reset()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_after_fork_in_child)
