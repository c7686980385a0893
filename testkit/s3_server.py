"""A real S3-compatible HTTP server for tests: moto's server mode (``ThreadedMotoServer``) on 127.0.0.1.

``s3_server()`` starts it on a free port, creates an IAM user with S3 rights, an access key for that user
and a bucket, and stops the server when the ``with`` block ends (its thread is a daemon, so it also ends
with the test process). Failing to start raises RuntimeError: a test that needs it fails, it is never
skipped.

Request signatures: moto can check them against its IAM keys, but it recomputes the signature from the
URL after werkzeug has decoded ``%2F`` in the query string, so every signed ListObjects with a ``prefix``
(which DVC sends on each push and pull) fails even with the right secret. Checks are therefore off by
default (moto's own default) and ``S3Server.signatures_enforced()`` turns them on for a test that needs a
wrong secret rejected; the first request DVC makes (a HeadObject, no query string) is checked correctly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

START_TIMEOUT_S = 20.0
REGION = "us-east-1"
S3_POLICY = json.dumps({"Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str = REGION

    @contextlib.contextmanager
    def signatures_enforced(self) -> Iterator[None]:
        """Reject requests not signed by a known access key with its secret (403), as real S3 does."""
        previous = _set_auth_threshold(self.endpoint_url, 0)
        try:
            yield
        finally:
            _set_auth_threshold(self.endpoint_url, previous)

    def client(self) -> Any:
        """A boto3 S3 client with the valid key, for checks and set-up outside DVC."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=self.access_key_id,
                            aws_secret_access_key=self.secret_access_key)

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in the bucket, sorted."""
        keys: list[str] = []
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound by us to get a free one, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _set_auth_threshold(endpoint_url: str, count: float) -> float:
    """moto's server-mode switch: every request after the first ``count`` must be signed by a known key."""
    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset-auth", data=str(count).encode(),
                                     headers={"Content-Type": "text/plain"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return float(json.loads(response.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])


@contextlib.contextmanager
def s3_server(bucket: str = "coordset-test") -> Iterator[S3Server]:
    """Start the server, create a user, its access key and a bucket; stop the server on exit."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # requirements.txt has moto[server]: a missing one is a failure, not a skip
        raise RuntimeError(f"moto[server] and boto3 are needed for the S3 remote tests: {exc}") from exc

    # werkzeug logs every request at INFO, which would bury a failing test's own output.
    request_log = logging.getLogger("werkzeug")
    previous_level = request_log.level
    request_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    # start() waits with no timeout for a server that may never come up; bound the wait.
    starter = threading.Thread(target=server.start, daemon=True)
    starter.start()
    starter.join(START_TIMEOUT_S)
    if starter.is_alive():
        raise RuntimeError(f"moto's S3 server did not start on 127.0.0.1 within {START_TIMEOUT_S:.0f} s")
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    try:
        # moto's backends are process-wide: start from none, as a fresh server would.
        urllib.request.urlopen(urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST"),
                               timeout=10).close()
        # Set-up calls run before any signature check, so any key pair is accepted for them.
        session = boto3.session.Session(aws_access_key_id="setup", aws_secret_access_key="setup",
                                        region_name=REGION)
        iam = session.client("iam", endpoint_url=endpoint_url)
        iam.create_user(UserName="coordset-ci")
        iam.put_user_policy(UserName="coordset-ci", PolicyName="s3-all", PolicyDocument=S3_POLICY)
        key = iam.create_access_key(UserName="coordset-ci")["AccessKey"]
        session.client("s3", endpoint_url=endpoint_url).create_bucket(Bucket=bucket)
    except Exception as exc:
        server.stop()
        request_log.setLevel(previous_level)
        raise RuntimeError(f"moto's S3 server at {endpoint_url} could not be set up: {exc}") from exc
    try:
        yield S3Server(endpoint_url=endpoint_url, bucket=bucket, access_key_id=key["AccessKeyId"],
                       secret_access_key=key["SecretAccessKey"])
    finally:
        server.stop()
        request_log.setLevel(previous_level)
