"""A local ECS container credentials endpoint that hands out short-lived credentials.

The sidecar finds it through AWS_CONTAINER_CREDENTIALS_FULL_URI, which botocore
accepts for loopback addresses, and sends AWS_CONTAINER_AUTHORIZATION_TOKEN in the
Authorization header, as the ECS agent expects.

botocore's refreshable credentials (botocore 1.43, credentials.py) try an
advisory refresh when fewer than 15 minutes remain before Expiration, and must
refresh when fewer than 10 minutes remain. A failed refresh in that mandatory
window is raised to the API call. So credentials that expire a few seconds
after they are issued are fetched again before every call, and a call made
while the endpoint is down fails with CredentialRetrievalError.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiohttp import web

from tests.background import BackgroundServer

CREDENTIALS_PATH = "/v2/credentials/sidecar-test"


@dataclass(frozen=True)
class IssuedCredentials:
    """One set of credentials that the endpoint handed out."""

    access_key_id: str
    secret_access_key: str
    session_token: str
    # POSIX times (time.time()), comparable with the sidecar's log timestamps.
    issued_at: float
    expires_at: float

    def values(self) -> tuple[str, str, str]:
        """Return the three secret strings, for leak checks."""
        return (self.access_key_id, self.secret_access_key, self.session_token)


class CredentialsEndpoint(BackgroundServer):
    """Serve a fresh set of credentials on every call, each valid for ``lifetime`` seconds.

    ``stop_listening`` takes the endpoint down (connections are refused) and
    ``listen`` brings it back on the same port.
    """

    def __init__(self, lifetime: float = 4.0) -> None:
        super().__init__("credentials-endpoint")
        self.lifetime = lifetime
        self.authorization_token = secrets.token_urlsafe(24)
        self._lock = threading.Lock()
        self._issued: list[IssuedCredentials] = []
        self._rejected = 0

    @property
    def full_uri(self) -> str:
        """Return the value for AWS_CONTAINER_CREDENTIALS_FULL_URI."""
        return self.url + CREDENTIALS_PATH

    def environment(self) -> dict[str, str | None]:
        """Return the variables that point botocore here, with static keys unset."""
        return {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": self.full_uri,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": self.authorization_token,
            "AWS_ACCESS_KEY_ID": None,
            "AWS_SECRET_ACCESS_KEY": None,
            "AWS_SESSION_TOKEN": None,
        }

    @property
    def issued(self) -> list[IssuedCredentials]:
        """Return every set of credentials handed out so far, oldest first."""
        with self._lock:
            return list(self._issued)

    @property
    def rejected(self) -> int:
        """Count the calls rejected for a missing or wrong Authorization header."""
        with self._lock:
            return self._rejected

    def find(self, access_key_id: str) -> IssuedCredentials | None:
        """Return the credentials with ``access_key_id``, if this endpoint issued them."""
        with self._lock:
            for issued in self._issued:
                if issued.access_key_id == access_key_id:
                    return issued
        return None

    def application(self) -> web.Application:
        """Build the application with the one credentials route."""
        application = web.Application()
        application.router.add_get(CREDENTIALS_PATH, self._handle)
        return application

    async def _handle(self, request: web.Request) -> web.Response:
        presented = request.headers.get("Authorization", "")
        if not secrets.compare_digest(presented, self.authorization_token):
            with self._lock:
                self._rejected += 1
            return web.json_response({"message": "invalid authorization token"}, status=401)

        now = time.time()
        expiration = datetime.fromtimestamp(now, UTC) + timedelta(seconds=self.lifetime)
        issued = IssuedCredentials(
            # Temporary AWS access key ids start with ASIA and are 20 characters.
            access_key_id="ASIA" + secrets.token_hex(8).upper(),
            secret_access_key=secrets.token_urlsafe(30),
            session_token=secrets.token_urlsafe(96),
            issued_at=now,
            expires_at=now + self.lifetime,
        )
        with self._lock:
            self._issued.append(issued)
        # The document the ECS agent serves (ECS developer guide, task IAM roles).
        return web.json_response(
            {
                "AccessKeyId": issued.access_key_id,
                "SecretAccessKey": issued.secret_access_key,
                "Token": issued.session_token,
                "Expiration": expiration.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "RoleArn": "arn:aws:iam::123456789012:role/sidecar-test",
            }
        )
