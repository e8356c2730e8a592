"""CLI commands beyond the core ones, one module each (registered in engine/cli.py)."""
