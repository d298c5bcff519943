"""What the S3 test scripts share."""
from botocore.exceptions import ClientError


def code(fn, **kw):
    """The S3 error code `fn(**kw)` fails with; an AssertionError when it succeeds."""
    try:
        fn(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError(f"{fn.__name__} {kw} should have failed")


def expect(want, fn, **kw):
    """Asserts that `fn(**kw)` fails with the S3 error code `want`, naming what it got."""
    got = code(fn, **kw)
    assert got == want, f"{fn.__name__} {kw}: expected {want}, got {got}"
