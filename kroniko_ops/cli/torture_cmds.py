"""Commands: torture (filled in by its issue's work)."""
