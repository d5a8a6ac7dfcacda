"""Errors every warehouse raises (Redshift and its embedded stand-in alike)."""

from __future__ import annotations


class UnloadError(RuntimeError):
    """An unload could not run; the message names the prefix or file."""
