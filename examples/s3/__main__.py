"""``python -m examples.s3``: start a dramatiq worker, send a message with a large result, show it in S3, stop."""

from __future__ import annotations

import sys

from .._workers import dramatiq_workers, redis_answers, say
from . import BOTO3_MISSING


def main() -> int:
    try:
        import boto3
    except ImportError:
        say(BOTO3_MISSING)
        return 2
    # Only now: the broker module builds its S3Store, which needs boto3.
    from . import send
    from .tasks import REDIS_URL, S3_BUCKET, S3_ENDPOINT_URL, S3_PREFIX

    if not redis_answers(REDIS_URL):
        return 2
    where = S3_ENDPOINT_URL or "AWS S3"
    try:
        boto3.client("s3", endpoint_url=S3_ENDPOINT_URL).head_bucket(Bucket=S3_BUCKET)
    except Exception as error:
        say(
            f"Cannot use bucket {S3_BUCKET!r} at {where} ({error}). Create it (aws s3 mb s3://{S3_BUCKET}), or set "
            "S3_BUCKET, S3_ENDPOINT_URL and the AWS_* credentials."
        )
        return 2
    say(f"Broker: Redis at {REDIS_URL}. Large results go to s3://{S3_BUCKET}/{S3_PREFIX}/ at {where}.")
    try:
        with dramatiq_workers("examples.s3.tasks", processes=1, threads=2):
            return send.main()
    except RuntimeError as error:
        say(f"FAILED: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
