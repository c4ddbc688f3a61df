#!/usr/bin/env python3
"""The demo project's manage.py; the sidecar_beacons app is one directory up."""
import os
import sys
from pathlib import Path

if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/django: sidecar_beacons
    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'demo.settings')
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
