"""The local address of the default gateway's interface (what ``host=""`` means)."""

from __future__ import annotations

import errno
import socket

# A documentation address (RFC 5737 TEST-NET-2): never assigned to a real host,
# so no local route covers it and the kernel picks the default route. Connecting
# a UDP socket only selects a route and a source address; no packet is sent.
_PROBE_DESTINATION = ("198.51.100.1", 9)


def default_gateway_address() -> str:
    """Return the IPv4 address of the interface that holds the default route.

    Raises OSError (ENETUNREACH) with an explanation when the machine has no
    IPv4 default route.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(_PROBE_DESTINATION)
        except OSError as error:
            raise OSError(
                errno.ENETUNREACH,
                "host='' means the address of the default gateway's interface, "
                "but this machine has no IPv4 default route "
                f"({error.strerror or error}); pass an explicit host, "
                "e.g. '127.0.0.1' or '0.0.0.0'",
            ) from error
        address: str = probe.getsockname()[0]
    return address
