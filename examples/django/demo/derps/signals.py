"""A custom beacon per derp upload (the README's example, tested by test/django-example.test.ts)."""
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

import sidecar_beacons
from sidecar_beacons import Int

from .models import Derp


@receiver(post_save, sender=Derp, dispatch_uid='derp-upload-beacon')
def derp_uploaded(sender, instance, created, **kwargs):
    if not created:
        return
    species = instance.species
    # on_commit: an upload whose transaction rolls back is not counted.
    transaction.on_commit(lambda: sidecar_beacons.send(
        'derp_uploads', tags={'species': species}, fields={'uploads': Int(1), 'name_length': Int(len(instance.name))}))
