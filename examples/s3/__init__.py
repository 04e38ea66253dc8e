"""The S3 example: large results written to S3 (or any S3-compatible service) from inside the Ray task."""
