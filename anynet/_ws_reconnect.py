"""When, and how soon, ``async for client in connect(url)`` connects again.

A failure is transient when trying again later may well succeed: the server
is restarting or overloaded, or the network failed. It is permanent when the
same attempt would fail the same way: the server refused us for a reason of
its own (a 4xx status), its certificate does not verify, or TLS is
misconfigured. Permanent failures end the loop with their exception; after
transient ones the client waits, longer after each consecutive failure, and
tries again.

The waits grow exponentially up to a cap, and each is drawn at random between
half and all of its bound ("jitter"), so that the thousands of clients a
restarting server drops do not all come back in the same instant.
"""

from __future__ import annotations

import asyncio
import random
import ssl

from anynet._ws_errors import HandshakeError
from anynet._ws_handshake import SchemeMismatchError
from anynet._ws_options import positive_seconds

#: Seconds before the first new attempt (at most; half of it at least).
DEFAULT_RECONNECT_DELAY = 1.0
#: Seconds that no wait between attempts exceeds, however many failed.
DEFAULT_RECONNECT_MAX_DELAY = 60.0

# Close codes after which the server may well take us back: it went away or
# is restarting (1001, 1012), it failed (1011, also ours for a peer that
# stopped answering pings), it asks us to try again later (1013), or the
# connection ended without a closing handshake (1006).
TRANSIENT_CLOSE_CODES = frozenset((1001, 1006, 1011, 1012, 1013))

# Refusals that pass: a request timeout, too many requests, and server errors
# (a proxy answers 502 or 503 while the server behind it restarts).
_TRANSIENT_STATUSES = frozenset((408, 429))


def is_transient(error: BaseException) -> bool:
    """Whether a failed connection attempt is worth repeating (see the module)."""
    if isinstance(error, HandshakeError):
        if isinstance(error, SchemeMismatchError):
            return False
        if isinstance(error.__cause__, ssl.SSLError):
            # A TLS failure explained, e.g. wss:// to a server without TLS.
            return is_transient(error.__cause__)
        # No status: the connection ended before a whole response came.
        status = error.status
        return status is None or status in _TRANSIENT_STATUSES or status >= 500
    if isinstance(error, ssl.SSLError):
        # A connection closed in the middle of the TLS handshake is like a
        # reset; every other TLS error (certificates, versions) will recur.
        return isinstance(error, ssl.SSLEOFError)
    # Refused, reset, unreachable, a name that did not resolve, a timeout.
    return isinstance(error, (OSError, asyncio.TimeoutError))


class Backoff:
    """Capped exponential waits with jitter (see the module)."""

    __slots__ = ("delay", "max_delay")

    def __init__(self, delay: float, max_delay: float) -> None:
        self.delay = positive_seconds("reconnect_delay", delay)
        self.max_delay = positive_seconds("reconnect_max_delay", max_delay)
        if self.max_delay < self.delay:
            raise ValueError(
                f"reconnect_max_delay ({max_delay!r}) is less than reconnect_delay ({delay!r})"
            )

    def wait_time(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (1 or more)."""
        # The exponent is bounded so that a long outage cannot overflow a float.
        bound = min(self.max_delay, self.delay * 2.0 ** min(failures - 1, 64))
        return random.uniform(bound / 2, bound)
