"""S3 against a hostile or careless client: what AWS would answer, and nothing lost.

Each block reproduces one defect a review found (the issue's item number in brackets).
Exits non-zero on the first failure.

usage: s3_hostile.py ENDPOINT ROOT_KEY ROOT_SECRET ALICE_KEY ALICE_SECRET
"""
import base64
import datetime
import hashlib
import hmac
import http.client
import sys
import threading
import urllib.error
import urllib.request

import boto3
from botocore.config import Config
from s3common import code, expect

ENDPOINT, ROOT_KEY, ROOT_SECRET, ALICE_KEY, ALICE_SECRET = sys.argv[1:6]
HOST = ENDPOINT.split("//", 1)[1]


def client(key, secret):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def anonymous(path):
    try:
        with urllib.request.urlopen(ENDPOINT + path) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


root = client(ROOT_KEY, ROOT_SECRET)
alice = client(ALICE_KEY, ALICE_SECRET)

# [1] 40 concurrent PUTs to one key of a versioned bucket: every acknowledged version stays.
root.create_bucket(Bucket="race")
root.put_bucket_versioning(Bucket="race", VersioningConfiguration={"Status": "Enabled"})
acked, errors = [], []


def put(i):
    try:
        c = client(ROOT_KEY, ROOT_SECRET)
        acked.append(c.put_object(Bucket="race", Key="k", Body=f"v{i}".encode())["VersionId"])
    except Exception as e:  # noqa: BLE001 - any failure is reported below
        errors.append(e)


threads = [threading.Thread(target=put, args=(i,)) for i in range(40)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
listed = root.list_object_versions(Bucket="race")["Versions"]
assert sorted(v["VersionId"] for v in listed) == sorted(acked), (len(listed), len(acked))

# [2] A wrong Content-MD5 leaves the previous object as it was.
root.put_object(Bucket="race", Key="md5.txt", Body=b"old")
bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
expect("BadDigest", root.put_object, Bucket="race", Key="md5.txt", Body=b"new", ContentMD5=bad)
assert root.get_object(Bucket="race", Key="md5.txt")["Body"].read() == b"old"

# [4] A copy needs s3:GetObject on its source: alice (s3:* on her bucket only) cannot copy
# another bucket's private object into hers.
expect("AccessDenied", alice.copy_object, Bucket="alice-bucket", Key="stolen",
            CopySource={"Bucket": "private-data", "Key": "secret.txt"})
expect("404", root.head_object, Bucket="alice-bucket", Key="stolen")

# [5] A Deny on s3:GetObject/PutObject/DeleteObject holds for every operation that needs
# them: HeadObject, CopyObject (both sides), multipart uploads, DeleteObjects per key.
root.put_object(Bucket="alice-bucket", Key="locked/a", Body=b"kept")
root.put_object(Bucket="alice-bucket", Key="free/x", Body=b"x")
expect("403", alice.head_object, Bucket="alice-bucket", Key="locked/a")
expect("AccessDenied", alice.get_object, Bucket="alice-bucket", Key="locked/a")
expect("AccessDenied", alice.copy_object, Bucket="alice-bucket", Key="free/copy",
            CopySource={"Bucket": "alice-bucket", "Key": "locked/a"})
expect("AccessDenied", alice.copy_object, Bucket="alice-bucket", Key="locked/b",
            CopySource={"Bucket": "alice-bucket", "Key": "free/x"})
expect("AccessDenied", alice.create_multipart_upload, Bucket="alice-bucket", Key="locked/c")
up = root.create_multipart_upload(Bucket="alice-bucket", Key="locked/d")["UploadId"]
expect("AccessDenied", alice.upload_part, Bucket="alice-bucket", Key="locked/d", UploadId=up,
            PartNumber=1, Body=b"x")
root.abort_multipart_upload(Bucket="alice-bucket", Key="locked/d", UploadId=up)
r = alice.delete_objects(Bucket="alice-bucket",
                         Delete={"Objects": [{"Key": "locked/a"}, {"Key": "free/x"}]})
assert [e["Key"] for e in r.get("Errors", []) if e["Code"] == "AccessDenied"] == ["locked/a"], r
assert [d["Key"] for d in r.get("Deleted", [])] == ["free/x"], r
assert root.get_object(Bucket="alice-bucket", Key="locked/a")["Body"].read() == b"kept"
# What alice may do still works.
alice.put_object(Bucket="alice-bucket", Key="free/y", Body=b"y")
assert alice.get_object(Bucket="alice-bucket", Key="free/y")["Body"].read() == b"y"

# [6] An Allow limited by aws:SourceIp does not grant the rest of the world.
status, body = anonymous("/ip-limited/x")
assert status == 403 and b"AccessDenied" in body, (status, body)
status, body = anonymous("/ip-limited-ok/x")
assert status == 200 and body == b"from loopback", (status, body)


# [9] Signature Version 2 has SigV4's clock bound: a request dated 2001 is refused.
def sigv2(date):
    string_to_sign = f"GET\n\n\n{date}\n/race/"
    sig = base64.b64encode(hmac.new(ROOT_SECRET.encode(), string_to_sign.encode(),
                                    hashlib.sha1).digest()).decode()
    c = http.client.HTTPConnection(HOST)
    c.request("GET", "/race/", headers={"Date": date, "Authorization": f"AWS {ROOT_KEY}:{sig}"})
    r = c.getresponse()
    return r.status, r.read()


status, body = sigv2("Mon, 01 Jan 2001 00:00:00 GMT")
assert status == 403 and b"RequestTimeTooSkewed" in body, (status, body)
now = datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
status, body = sigv2(now)
assert status == 200 and b"md5.txt" in body, (status, body)

# [12] What veeps does not implement is refused, never ignored.


def with_headers(c, op, headers):
    def add(request, **_):
        for k, v in headers.items():
            request.headers[k] = v
    c.meta.events.register(f"before-sign.s3.{op}", add)
    return c


ssec = with_headers(client(ROOT_KEY, ROOT_SECRET), "PutObject", {
    "x-amz-server-side-encryption-customer-algorithm": "AES256",
    "x-amz-server-side-encryption-customer-key": base64.b64encode(b"k" * 32).decode(),
    "x-amz-server-side-encryption-customer-key-MD5":
        base64.b64encode(hashlib.md5(b"k" * 32).digest()).decode(),
})
expect("NotImplemented", ssec.put_object, Bucket="race", Key="ssec", Body=b"x")
expect("NotImplemented", root.put_object, Bucket="race", Key="kms", Body=b"x",
            ServerSideEncryption="aws:kms", SSEKMSKeyId="no-such-key")
expect("NotImplemented", root.create_bucket, Bucket="locked-bucket",
            ObjectLockEnabledForBucket=True)
for key in ("ssec", "kms"):
    expect("404", root.head_object, Bucket="race", Key=key)
expect("NotImplemented", root.put_object, Bucket="race", Key="exp", Body=b"x",
            Expires=datetime.datetime(2030, 1, 1))
expect("NotImplemented", root.put_object, Bucket="race", Key="cold", Body=b"x",
            StorageClass="GLACIER")
expect("NotImplemented", root.put_object, Bucket="race", Key="redir", Body=b"x",
            WebsiteRedirectLocation="/elsewhere")
# Standard headers are kept and served back.
root.put_object(Bucket="race", Key="page.html.gz", Body=b"gz", ContentEncoding="gzip",
                ContentDisposition='attachment; filename="p.html"', ContentLanguage="fr")
h = root.head_object(Bucket="race", Key="page.html.gz")
assert (h.get("ContentEncoding"), h.get("ContentDisposition"), h.get("ContentLanguage")) == \
    ("gzip", 'attachment; filename="p.html"', "fr"), h
# ... and what SDKs send is implemented: checksums and conditional writes.
wrong = base64.b64encode(hashlib.sha256(b"not the body").digest()).decode()
expect("BadDigest", root.put_object, Bucket="race", Key="sum", Body=b"body",
            ChecksumSHA256=wrong)
expect("404", root.head_object, Bucket="race", Key="sum")
right = base64.b64encode(hashlib.sha256(b"body").digest()).decode()
root.put_object(Bucket="race", Key="sum", Body=b"body", ChecksumSHA256=right)
root.put_object(Bucket="race", Key="once", Body=b"first", IfNoneMatch="*")
expect("PreconditionFailed", root.put_object, Bucket="race", Key="once", Body=b"second",
            IfNoneMatch="*")
etag = root.head_object(Bucket="race", Key="once")["ETag"]
expect("PreconditionFailed", root.put_object, Bucket="race", Key="once", Body=b"x",
            IfMatch='"0123456789abcdef0123456789abcdef"')
root.put_object(Bucket="race", Key="once", Body=b"third", IfMatch=etag)
expect("PreconditionFailed", root.delete_object, Bucket="race", Key="once", IfMatch=etag)
assert root.get_object(Bucket="race", Key="once")["Body"].read() == b"third"

# [11] Lifecycle filters apply as S3 applies them, or the rule is refused.
tagged = {"Rules": [{"ID": "t", "Status": "Enabled", "Expiration": {"Days": 1},
                     "Filter": {"Tag": {"Key": "k", "Value": "v"}}}]}
expect("NotImplemented", root.put_bucket_lifecycle_configuration, Bucket="race",
            LifecycleConfiguration=tagged)
sized = {"Rules": [{"ID": "s", "Status": "Enabled", "Expiration": {"Days": 1},
                    "Filter": {"And": {"Prefix": "logs/", "ObjectSizeGreaterThan": 1000}}},
                   {"ID": "n", "Status": "Enabled", "Filter": {"Prefix": ""},
                    "NoncurrentVersionExpiration": {"NoncurrentDays": 1,
                                                    "NewerNoncurrentVersions": 3}}]}
root.put_bucket_lifecycle_configuration(Bucket="race", LifecycleConfiguration=sized)
got = root.get_bucket_lifecycle_configuration(Bucket="race")["Rules"]
assert got[0]["Filter"]["And"]["ObjectSizeGreaterThan"] == 1000, got
assert got[1]["NoncurrentVersionExpiration"]["NewerNoncurrentVersions"] == 3, got
root.delete_bucket_lifecycle(Bucket="race")

# [13] Anonymous requests naming random buckets (the caller counts the series after).
for i in range(300):
    anonymous(f"/random-{i}-{hashlib.md5(str(i).encode()).hexdigest()[:8]}/x")

print("hostile: ok")
