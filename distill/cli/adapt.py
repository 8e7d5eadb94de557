"""distill teacher adapt (see teachers/adapt.py)."""
