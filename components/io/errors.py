"""One error for every failure to reach a file or an object: one line naming it and what to do."""

from __future__ import annotations

import re


class StorageError(OSError):
    """A file or object could not be read or written; ``str()`` is one line naming the URI."""

    def __init__(self, uri: str, reason: str, hint: str = "") -> None:
        self.uri, self.reason, self.hint = str(uri), reason, hint
        super().__init__(f"{self.uri}: {reason}" + (f" ({hint})" if hint else ""))

    def __reduce__(self) -> tuple:  # picklable across processes and Ray workers
        return (type(self), (self.uri, self.reason, self.hint))

    @property
    def missing(self) -> bool:
        return self.reason in (NOT_FOUND, NO_BUCKET)


NOT_FOUND = "not found"
UNREACHABLE = "endpoint unreachable"
NO_BUCKET = "bucket not found"
CREDENTIALS_HINT = ("check the credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance "
                    "role for s3://, GOOGLE_APPLICATION_CREDENTIALS for gs://")

# (pattern in the store client's message, reason, what to do); first match wins
_KNOWN: list[tuple[str, str, str]] = [
    # gs:// without usable Google credentials (its client reports the token, whatever the cause below it)
    (r"Could not create a OAuth2 access token", "credentials missing or rejected (no Google access token)",
     "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run on a VM/pod with a service "
     "account; STORAGE_EMULATOR_HOST=host:port for an emulator"),
    (r"NETWORK_CONNECTION|curlCode: (6|7|28)|Couldn't (connect|resolve)|Could not (connect|resolve)|Connection refused|timed out|"
     r"Name or service not known|Temporary failure in name resolution",
     UNREACHABLE, "check the network and AWS_ENDPOINT_URL for S3-compatible stores"),
    (r"NO_SUCH_BUCKET|NoSuchBucket|bucket does not exist", NO_BUCKET, "check the bucket name in the URI"),
    (r"INVALID_ACCESS_KEY_ID|InvalidAccessKeyId|SIGNATURE_DOES_NOT_MATCH|SignatureDoesNotMatch|"
     r"No credentials|MISSING_AUTHENTICATION|Unable to locate credentials|EXPIRED_TOKEN|ExpiredToken",
     "credentials missing or rejected", CREDENTIALS_HINT),
    (r"ACCESS_DENIED|AccessDenied|HTTP status 403|\b403\b|Forbidden|permission denied|Permission denied",
     "access denied (403)", CREDENTIALS_HINT + ", and the bucket policy"),
    (r"NO_SUCH_KEY|NoSuchKey|Path does not exist|not found|No such file|HTTP status 404|\b404\b",
     NOT_FOUND, "check the path"),
]

NO_AWS_CREDENTIALS = "refused, and no AWS credentials are set (environment, ~/.aws)"
NO_AWS_CREDENTIALS_HINT = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) on the driver and "
                           "every node, or give the nodes an instance or pod role")
_AWS_CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


def aws_credentials_set() -> bool:
    """Credentials the AWS chain would find before the instance role: variables or ~/.aws files."""
    import os
    from pathlib import Path

    files = (os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
             os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"))
    return any(os.environ.get(v) for v in _AWS_CREDENTIAL_VARS) or any(Path(f).expanduser().is_file() for f in files)


def classify(uri: str, err: BaseException) -> StorageError:
    """The client's error (pyarrow OSError, urllib HTTPError, ...) as a StorageError naming ``uri``.
    An s3:// request refused while no credentials are set says that (stores answer an unsigned request
    with 403, or some emulators with 500)."""
    if isinstance(err, StorageError):
        return err
    if isinstance(err, FileNotFoundError):
        return StorageError(uri, NOT_FOUND, "check the path")
    text = " ".join(str(err).split())
    found = None
    for pattern, reason, hint in _KNOWN:
        if re.search(pattern, text):
            if reason == UNREACHABLE and str(uri).startswith(("gs://", "gcs://")):
                hint = "check the network, and STORAGE_EMULATOR_HOST=host:port for a GCS emulator"
            found = StorageError(uri, reason, hint)
            break
    if found is None:
        first = text.split(". ")[0][:200] or type(err).__name__
        found = StorageError(uri, f"cannot read ({type(err).__name__}: {first})")
    if (uri.startswith("s3://") and found.reason not in (NOT_FOUND, NO_BUCKET, UNREACHABLE)
            and not aws_credentials_set()):
        return StorageError(uri, NO_AWS_CREDENTIALS, NO_AWS_CREDENTIALS_HINT)
    return found
