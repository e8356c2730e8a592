"""Sluice: pipelines as code, every step in its own container, every run recorded in git."""

__version__ = "0.1.0"
