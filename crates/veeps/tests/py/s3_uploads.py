"""Concurrent uploads for the kill -9 test.

  s3_uploads.py upload ENDPOINT KEY SECRET BUCKET   uploads until the server goes away,
                                                    printing "ACK key" per acknowledged PUT
  s3_uploads.py verify ENDPOINT KEY SECRET BUCKET ACKFILE
      every acknowledged key is there, and every object there is whole
"""
import hashlib
import sys
import threading

import boto3
from botocore.config import Config

MODE, ENDPOINT, KEY, SECRET, BUCKET = sys.argv[1:6]
s3 = boto3.client(
    "s3",
    endpoint_url=ENDPOINT,
    aws_access_key_id=KEY,
    aws_secret_access_key=SECRET,
    region_name="us-east-1",
    config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
)


def body(key):
    seed = hashlib.sha256(key.encode()).digest()
    size = (1 << 20) + (seed[0] % 5) * (1 << 20) + seed[1]
    return (seed * (size // 32 + 1))[:size]


lock = threading.Lock()


def uploader(t):
    i = 0
    while True:
        key = f"t{t}/{i}"
        try:
            s3.put_object(Bucket=BUCKET, Key=key, Body=body(key))
        except Exception:
            return
        with lock:
            print("ACK", key, flush=True)
        i += 1


if MODE == "upload":
    threads = [threading.Thread(target=uploader, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
else:
    acked = [line.split()[1] for line in open(sys.argv[6]) if line.startswith("ACK ")]
    present = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for o in page.get("Contents", []):
            present[o["Key"]] = o["Size"]
    missing = [k for k in acked if k not in present]
    assert not missing, f"acknowledged but lost: {missing}"
    for k in present:
        got = s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()
        assert got == body(k), f"{k} is not whole ({len(got)} bytes)"
    print(f"verified: {len(acked)} acknowledged, {len(present)} present, all whole", flush=True)
