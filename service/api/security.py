"""Optional API keys and a per-client rate limit.

Keys are compared in constant time; only a short digest of a key ever reaches logs and
metrics. The rate limit is a token bucket per key (per client address when no keys are
configured), kept in this process: each API replica limits on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

from pydantic import SecretStr

from service.api.error_handlers import ApiError

__all__ = ["ApiKeys", "RateLimiter", "key_id"]


def key_id(key: str) -> str:
    """A stable, non-secret name for a key: the first 12 hex digits of its sha256."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class ApiKeys:
    def __init__(self, keys: Sequence[SecretStr]) -> None:
        self._keys = [k.get_secret_value().encode() for k in keys]

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def identify(self, authorization: str | None) -> str:
        """The key id for an ``Authorization: Bearer <key>`` header; 401 when it is wrong."""
        challenge = {"WWW-Authenticate": "Bearer"}
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "unauthorized",
                "this server needs an API key: send 'Authorization: Bearer <key>'",
                headers=challenge,
            )
        given = token.strip().encode()
        # compare with every key, always, so timing does not tell which prefix matched
        matched = [hmac.compare_digest(given, key) for key in self._keys]
        if not any(matched):
            raise ApiError(401, "unauthorized", "the API key is not valid", headers=challenge)
        return key_id(token.strip())


class RateLimiter:
    """Token buckets: `rate` requests per second, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int, *, max_clients: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, time
        self._lock = threading.Lock()

    def take(self, client: str) -> None:
        """Spend one token of `client`, or answer 429 with when to retry."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[client] = (tokens, now)
            if len(self._buckets) > self.max_clients:  # forget the longest-idle client
                self._buckets.popitem(last=False)
        if not allowed:
            wait = math.ceil((1.0 - tokens) / self.rate)
            raise ApiError(
                429,
                "rate_limited",
                f"more than {self.rate:g} requests per second; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
