"""Running Dramatiq's own test modules against dramatiq-ray's classes (see ``plugin.py``)."""
