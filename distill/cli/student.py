"""distill student commands (see the student module)."""
