"""Built-in checks, one check per file."""
