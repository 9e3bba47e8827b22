"""Commands: compact (filled in by its issue's work)."""
