"""Numpy arrays computed on Ray, returned as arrays: see README.md."""
