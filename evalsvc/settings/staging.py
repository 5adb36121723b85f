"""Staging: production's settings, fed with staging's environment. Nothing staging-only here."""

from .production import *  # noqa: F403
