"""Runnable examples of dramatiq-ray. Run each from the repository root with ``python -m examples.<name>``."""
