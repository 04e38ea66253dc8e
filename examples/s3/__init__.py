"""The S3 example: large results written to S3 (or any S3-compatible service) from inside the Ray task."""

#: What the example says, in one line before it exits with code 2, when boto3 is not installed.
BOTO3_MISSING = 'The S3 example needs boto3: install the package with its s3 extra (pip install ".[s3]").'
