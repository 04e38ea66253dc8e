"""Send the S3 example's message and show where its result went. Run it while workers are running:

dramatiq examples.s3.tasks --processes 1 --threads 2    # in one terminal
python -m examples.s3.send                              # in another
"""

from __future__ import annotations

import sys

import boto3

from dramatiq_ray import get_pointer

from .tasks import S3_BUCKET, S3_ENDPOINT_URL, measurements

#: How long to wait for the result, in milliseconds (the first message also waits for Ray to start).
RESULT_TIMEOUT_MS = 300_000
COUNT = 20_000


def main() -> int:
    """Send one message, read its result back, check the object in the bucket; 0 when all is right."""
    print(f"Sending measurements('boiler-7', {COUNT}): its result is far larger than the 64 KiB inline limit.")
    message = measurements.send("boiler-7", COUNT)
    result = message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    pointer = get_pointer(message)
    print(f"  get_result() returned {len(result['readings'])} readings of sensor {result['sensor']!r}.")
    if pointer is None or not pointer.startswith(f"s3://{S3_BUCKET}/"):
        print(f"UNEXPECTED: the result was not spilled to s3://{S3_BUCKET} (pointer {pointer!r}).")
        return 1
    key = pointer.split("?")[0][len(f"s3://{S3_BUCKET}/") :]
    head = boto3.client("s3", endpoint_url=S3_ENDPOINT_URL).head_object(Bucket=S3_BUCKET, Key=key)
    print(f"  Redis holds only the pointer {pointer.split('?')[0]}")
    print(f"  and the object is in the bucket: {head['ContentLength']} bytes, written by the Ray task.")
    if len(result["readings"]) != COUNT or result["readings"][-1]["t"] != COUNT - 1:
        print("UNEXPECTED: the result came back wrong.")
        return 1
    print("The result is as expected.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
