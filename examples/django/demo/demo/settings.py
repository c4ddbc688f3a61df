"""A minimal Rate My Derp to try sidecar_beacons with (not for production: DEBUG off, fixed key).

Environment: SIDECAR_URL, SIDECAR_TOKEN, SIDECAR_QUEUE_SIZE, SIDECAR_BATCH_SIZE; DEMO_BEACONS=0
leaves the middleware out (for comparing timings); DEMO_DB is the SQLite file (default: in the
temporary directory).
"""
import os
import tempfile

SECRET_KEY = 'demo-only-not-a-secret'
DEBUG = False
ALLOWED_HOSTS = ['127.0.0.1', 'localhost']

INSTALLED_APPS = ['sidecar_beacons', 'derps']
MIDDLEWARE = ['sidecar_beacons.middleware.BeaconMiddleware'] if os.environ.get('DEMO_BEACONS', '1') != '0' else []
ROOT_URLCONF = 'demo.urls'
TEMPLATES = []
USE_TZ = True
DEFAULT_AUTO_FIELD = 'django.db.models.BigAutoField'
DATABASES = {'default': {
    'ENGINE': 'django.db.backends.sqlite3',
    'NAME': os.environ.get('DEMO_DB', os.path.join(tempfile.gettempdir(), 'sidecar-beacons-demo.sqlite3')),
}}

SIDECAR_URL = os.environ.get('SIDECAR_URL', 'http://127.0.0.1:8186')
SIDECAR_TOKEN = os.environ.get('SIDECAR_TOKEN') or None
SIDECAR_BEACONS = {
    'QUEUE_SIZE': int(os.environ.get('SIDECAR_QUEUE_SIZE', '10000')),
    'BATCH_SIZE': int(os.environ.get('SIDECAR_BATCH_SIZE', '500')),
}

LOGGING = {
    'version': 1,
    'disable_existing_loggers': False,
    'handlers': {'console': {'class': 'logging.StreamHandler'}},
    'loggers': {'sidecar_beacons': {'handlers': ['console'], 'level': 'INFO', 'propagate': False}},
}
