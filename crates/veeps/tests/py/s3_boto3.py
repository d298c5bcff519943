"""boto3 against veeps' S3 API: versioning, virtual-host addressing, a 100 MiB multipart
upload, presigned URLs, and S3's errors for bad input. Exits non-zero on the first failure.

usage: s3_boto3.py ENDPOINT ACCESS_KEY_ID SECRET WORKDIR
"""
import datetime
import hashlib
import os
import socket
import sys
import time
import urllib.error
import urllib.request

import boto3
import botocore.auth
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from s3common import code, expect

ENDPOINT, KEY, SECRET, WORK = sys.argv[1:5]
PORT = int(ENDPOINT.rsplit(":", 1)[1])

# BUCKET.localhost is the loopback address (as browsers and systemd-resolved have it).
_getaddrinfo = socket.getaddrinfo


def _loopback_localhost(host, *a, **kw):
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _getaddrinfo(host, *a, **kw)


socket.getaddrinfo = _loopback_localhost


def client(style="path", endpoint=ENDPOINT, attempts=1):
    """A client; one attempt by default, so that every error code is seen as sent."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": style}, retries={"max_attempts": attempts}),
    )


def http(url, method="GET"):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method)) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


s3 = client()
s3.create_bucket(Bucket="boto")

# Versioning: versions by id, a delete marker, its removal.
s3.put_bucket_versioning(Bucket="boto", VersioningConfiguration={"Status": "Enabled"})
assert s3.get_bucket_versioning(Bucket="boto")["Status"] == "Enabled"
v1 = s3.put_object(Bucket="boto", Key="doc.txt", Body=b"one")["VersionId"]
v2 = s3.put_object(Bucket="boto", Key="doc.txt", Body=b"two")["VersionId"]
assert v1 and v2 and v1 != v2
assert s3.get_object(Bucket="boto", Key="doc.txt")["Body"].read() == b"two"
assert s3.get_object(Bucket="boto", Key="doc.txt", VersionId=v1)["Body"].read() == b"one"
d = s3.delete_object(Bucket="boto", Key="doc.txt")
assert d["DeleteMarker"] and d["VersionId"], d
expect("NoSuchKey", s3.get_object, Bucket="boto", Key="doc.txt")
vs = s3.list_object_versions(Bucket="boto", Prefix="doc")
assert [v["VersionId"] for v in vs["Versions"]] == [v2, v1], vs
assert [m["IsLatest"] for m in vs["DeleteMarkers"]] == [True], vs
expect("MethodNotAllowed", s3.get_object, Bucket="boto", Key="doc.txt", VersionId=d["VersionId"])
expect("NoSuchVersion", s3.get_object, Bucket="boto", Key="doc.txt", VersionId="0" * 32)
s3.delete_object(Bucket="boto", Key="doc.txt", VersionId=d["VersionId"])
assert s3.get_object(Bucket="boto", Key="doc.txt")["Body"].read() == b"two"
s3.delete_object(Bucket="boto", Key="doc.txt", VersionId=v2)
assert s3.get_object(Bucket="boto", Key="doc.txt")["Body"].read() == b"one"
assert s3.get_bucket_encryption(Bucket="boto")["ServerSideEncryptionConfiguration"]["Rules"][0][
    "ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

# Virtual-host style: the bucket in the Host header.
vh = client("virtual", f"http://localhost:{PORT}")
vh.put_object(Bucket="boto", Key="vhost/a.txt", Body=b"virtual")
assert s3.get_object(Bucket="boto", Key="vhost/a.txt")["Body"].read() == b"virtual"
assert [o["Key"] for o in vh.list_objects_v2(Bucket="boto", Prefix="vhost/")["Contents"]] == ["vhost/a.txt"]

# 100 MiB in 16 MiB parts, back with the same checksum.
big = os.path.join(WORK, "big.bin")
with open(big, "wb") as f:
    block = hashlib.sha256(b"veeps").digest() * (1 << 15)  # 1 MiB
    for i in range(100):
        f.write(bytes([i]) + block[1:])
want = hashlib.md5(open(big, "rb").read()).hexdigest()
cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=16 << 20, max_concurrency=4)
# Transfers retry as SDKs do by default: a pooled connection the server closed after its
# idle timeout (15 s; a loaded machine can idle that long between parts) is retried on a
# new one, as against AWS.
s3t = client(attempts=3)
s3t.upload_file(big, "boto", "big.bin", Config=cfg)
head = s3.head_object(Bucket="boto", Key="big.bin")
assert head["ContentLength"] == 100 << 20 and head["ETag"].endswith('-7"'), head
back = os.path.join(WORK, "big.back")
s3t.download_file("boto", "big.bin", back, Config=cfg)
assert hashlib.md5(open(back, "rb").read()).hexdigest() == want

# CompleteMultipartUpload sent twice (a client whose first answer was lost) answers twice
# the same, as S3 does; with other parts it is NoSuchUpload.
up = s3.create_multipart_upload(Bucket="boto", Key="twice")["UploadId"]
tag = s3.upload_part(Bucket="boto", Key="twice", UploadId=up, PartNumber=1, Body=b"once")["ETag"]
parts = {"Parts": [{"ETag": tag, "PartNumber": 1}]}
first = s3.complete_multipart_upload(Bucket="boto", Key="twice", UploadId=up, MultipartUpload=parts)
second = s3.complete_multipart_upload(Bucket="boto", Key="twice", UploadId=up, MultipartUpload=parts)
assert first["ETag"] == second["ETag"], (first, second)
expect("NoSuchUpload", s3.complete_multipart_upload, Bucket="boto", Key="twice", UploadId=up,
       MultipartUpload={"Parts": [{"ETag": '"0"', "PartNumber": 1}]})

# Presigned GET works until it expires.
url = s3.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "doc.txt"}, ExpiresIn=1)
assert http(url) == (200, b"one")
time.sleep(2.2)
status, body = http(url)
assert status == 403 and b"AccessDenied" in body, (status, body)

# Bad input: S3's codes, nothing written.
expect("KeyTooLongError", s3.put_object, Bucket="boto", Key="k" * 1025, Body=b"x")
expect("InvalidArgument", s3.put_object, Bucket="boto", Key="nul\x00byte", Body=b"x")
expect("InvalidArgument", s3.put_object, Bucket="boto", Key="../escape", Body=b"x")
expect("InvalidArgument", s3.put_object, Bucket="boto", Key="/absolute", Body=b"x")
expect("BadDigest", s3.put_object, Bucket="boto", Key="md5.txt", Body=b"x",
            ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")
expect("404", s3.head_object, Bucket="boto", Key="md5.txt")
up = s3.create_multipart_upload(Bucket="boto", Key="parts")["UploadId"]
for n in (0, 10001):
    got = code(s3.upload_part, Bucket="boto", Key="parts", UploadId=up, PartNumber=n,
               Body=b"x")
    assert got == "InvalidArgument", (n, got)
s3.abort_multipart_upload(Bucket="boto", Key="parts", UploadId=up)
expect("NoSuchUpload", s3.upload_part, Bucket="boto", Key="parts", UploadId=up, PartNumber=1,
            Body=b"x")

# A single PUT over 5 GiB is refused before its body is read.
put = s3.generate_presigned_url("put_object", Params={"Bucket": "boto", "Key": "huge"}, ExpiresIn=60)
path = put.split(f":{PORT}", 1)[1]
with socket.create_connection(("127.0.0.1", PORT)) as c:
    c.sendall(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\nContent-Length: {(5 << 30) + 1}\r\n\r\n".encode())
    c.settimeout(10)
    answer = c.recv(4096)
assert b"EntityTooLarge" in answer, answer
expect("404", s3.head_object, Bucket="boto", Key="huge")

# A request signed 20 minutes off the server's clock.
real = botocore.auth.datetime.datetime


class Skewed(real):
    @classmethod
    def utcnow(cls):
        return real.utcnow() - datetime.timedelta(minutes=20)

    @classmethod
    def now(cls, tz=None):
        return real.now(tz) - datetime.timedelta(minutes=20)


botocore.auth.datetime.datetime = Skewed
try:
    expect("RequestTimeTooSkewed", s3.list_objects_v2, Bucket="boto")
finally:
    botocore.auth.datetime.datetime = real

# Still serving.
assert "boto" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
print("boto3: ok")
