"""Process-wide plumbing: configuration, database, security."""
