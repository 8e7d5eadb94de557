"""distill: knowledge distillation and compression for sequence labelling (NER)."""

__version__ = "0.1.0"
