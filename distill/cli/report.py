"""distill report commands (see the report module)."""
