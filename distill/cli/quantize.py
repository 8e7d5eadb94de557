"""distill quantize commands (see the quantize module)."""
