from django.db import models


class Derp(models.Model):
    """Rate My Derp's model, trimmed: its table is derps_derp, which the sidecar counts by species."""
    name = models.CharField(max_length=100)
    species = models.CharField(max_length=50, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
