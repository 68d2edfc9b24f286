"""The floor under TLS memory: what OpenSSL itself keeps per server connection.

Completes TLS handshakes between pairs of ``ssl.SSLObject`` over memory BIOs
(no sockets, no event loop, no WebSocket), keeps the server sides, drops the
client sides, and reports the C heap in use per kept server side
(``mallinfo2``, glibc only), before and after its handshake: the memory any
Python TLS layer over this OpenSSL pays per idle connection, whatever it adds.

    python benchmarks/tls_memory.py [--connections 1000]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import ssl
import sys
from typing import Any, Callable

import _harness
import _peers

# anynet (for the certificate) from this source tree, as the workers import it.
sys.path.insert(0, str(_harness.REPOSITORY))


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]


def heap_in_use() -> Callable[[], int]:
    """Bytes allocated by malloc and not freed, small and large blocks alike."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2

    def measure() -> int:
        info = libc.mallinfo2()
        return int(info.uordblks + info.hblkhd)

    return measure


def server_side(server: ssl.SSLContext, client: ssl.SSLContext, handshake: bool) -> Any:
    """A server SSLObject with its BIOs, after a handshake and one exchange if asked."""
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    if not handshake:
        return server_side, server_in, server_out
    client_side = client.wrap_bio(client_in, client_out, server_hostname=_peers.HOST)
    for _ in range(8):
        for side in (client_side, server_side):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    client_side.write(b"x" * 256)
    server_in.write(client_out.read())
    assert server_side.read(1024) == b"x" * 256
    return server_side, server_in, server_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    count = parser.parse_args().connections
    context = _peers.tls_context()
    server, client = context.get(True), context.get(False)
    in_use = heap_in_use()
    for handshake in (False, True):
        warm = [server_side(server, client, handshake) for _ in range(50)]
        gc.collect()
        before = in_use()
        kept = [server_side(server, client, handshake) for _ in range(count)]
        gc.collect()
        per_connection = (in_use() - before) / count
        state = "after a TLS 1.3 handshake" if handshake else "fresh, before the handshake"
        print(f"server SSLObject + 2 MemoryBIOs, {state}: {per_connection / 1024:.1f} KiB")
        del warm, kept
    print(ssl.OPENSSL_VERSION)


if __name__ == "__main__":
    main()
