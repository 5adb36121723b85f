"""Per-environment settings: pick one with DJANGO_SETTINGS_MODULE (see README)."""
