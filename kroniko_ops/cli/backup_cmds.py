"""Commands: backup (filled in by its issue's work)."""
