"""Connection costs side by side: server memory per idle connection, and handshakes per second.

For anynet, picows, websockets and aiohttp (and a raw TCP server as the floor of
memory), each library's server and client in separate processes on 127.0.0.1, the
client being the same library's:

- ``memory``: a fresh server process accepts a few connections and lets them go
  (so lazy imports and first-use caches are paid), then its resident set size is
  read from ``/proc/<pid>/status``; the client opens 2000 WebSocket connections
  (50 handshakes at a time) and leaves them idle; the server's RSS is read again.
  The figure is the difference divided by 2000: what one idle connection costs the
  server, everything included (transport, protocol, buffers, handler task).
- ``handshakes``: loops of connect, opening handshake, closing handshake, close,
  counted per second after a warm-up; ``sequential`` runs one loop (the latency of
  a whole connection's life), ``concurrent`` runs 8 loops at once in the client
  process (the server's accept rate under a reconnect storm).  Not for raw TCP: a
  bare connect-and-close loop closes from the client side, so every connection
  leaves a client port in TIME_WAIT; at its rate it exhausts the ephemeral ports
  towards one server within seconds, and the figure then measures the kernel's
  port search.  (The WebSocket servers close TCP first, as RFC 6455 asks, so their
  TIME_WAIT stays on the server side.)

Repeats are interleaved as in ``echo.py``, with ratios to picows taken within each
repeat (for memory a ratio below 1 is better).

    python benchmarks/connections.py            # full run, a few minutes
    python benchmarks/connections.py --quick    # under a minute (1000 idle connections)

Writes ``results/connections.json`` and ``results/connections.md`` (``--quick``:
``connections-quick.*``).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from typing import Any

import _harness
import _peers

METRICS = ("memory", "handshakes")
CONCURRENT_HANDSHAKES = 8
OPENING_CONCURRENCY = 50
SETTLE_SECONDS = 0.3

FULL = {"repeats": 3, "warmup": 0.3, "duration": 1.0, "connections": 2000}
QUICK = {"repeats": 1, "warmup": 0.1, "duration": 0.2, "connections": 1000}

ROW_TITLES = {
    "memory": "server memory per idle connection",
    "handshakes-sequential": "handshakes per second, 1 client",
    "handshakes-concurrent": f"handshakes per second, {CONCURRENT_HANDSHAKES} concurrent clients",
}


def resident_set_size(pid: int) -> int:
    """A process's resident memory in bytes, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def measure_memory(
    server: _harness.Worker, client: _harness.Worker, connections: int
) -> dict[str, Any]:
    """The server's RSS growth per idle connection; stops ``server`` afterwards."""
    try:
        port = server.hello["port"]
        timeout = 120
        # Warm-up: the first connections pay for lazy imports and caches.
        client.request({"op": "hold", "port": port, "connections": 20, "concurrency": 20}, timeout)
        client.request({"op": "release"}, timeout)
        time.sleep(SETTLE_SECONDS)
        before = resident_set_size(server.pid)
        client.request(
            {
                "op": "hold",
                "port": port,
                "connections": connections,
                "concurrency": OPENING_CONCURRENCY,
            },
            timeout,
        )
        time.sleep(SETTLE_SECONDS)
        after = resident_set_size(server.pid)
        client.request({"op": "release"}, timeout)
    finally:
        server.stop()
    return {
        "bytes_per_connection": (after - before) / connections,
        "rss_before": before,
        "rss_after": after,
        "connections": connections,
    }


def cells_to_run(metrics: list[str], loops: list[str]) -> list[dict[str, Any]]:
    cells = []
    for metric in metrics:
        kinds = (
            ["memory"] if metric == "memory" else ["handshakes-sequential", "handshakes-concurrent"]
        )
        for kind in kinds:
            for loop in loops:
                cell = {"kind": kind, "loop": loop}
                if kind != "memory":
                    cell["not_measured"] = ["raw"]
                cells.append(cell)
    return cells


def figure(reply: dict[str, Any]) -> float | None:
    return reply.get("bytes_per_connection", reply.get("rate"))


def show(reply: dict[str, Any]) -> str:
    if "bytes_per_connection" in reply:
        return f"{reply['bytes_per_connection'] / 1024:.1f} KiB"
    if "rate" in reply:
        return f"{reply['rate']:,.0f}/s"
    return "FAILED"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="one short repeat: under a minute")
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="both")
    parser.add_argument(
        "--libs",
        default=",".join(_peers.LIBRARIES),
        help="comma-separated libraries (raw: memory only)",
    )
    parser.add_argument(
        "--metrics", default=",".join(METRICS), help="comma-separated, of: memory, handshakes"
    )
    parser.add_argument("--repeats", type=int, help="interleaved repeats (full 3, quick 1)")
    parser.add_argument("--warmup", type=float, help="seconds before each handshake window")
    parser.add_argument("--duration", type=float, help="seconds of each handshake window")
    parser.add_argument("--connections", type=int, help="idle connections for memory (full 2000, quick 1000)")
    return _harness.parse_with_defaults(parser, argv, QUICK, FULL)


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    loops = _harness.loops_from_option(arguments.loop)
    requested = _harness.parse_list(arguments.libs, _peers.LIBRARIES, "libraries")
    metrics = _harness.parse_list(arguments.metrics, METRICS, "metrics")
    libraries, skipped = _harness.usable_libraries(_harness.default_library_order(requested), loops)
    if not libraries:
        raise SystemExit("no library to measure")
    cells = cells_to_run(metrics, loops)
    workers = _harness.Workers()
    anynet: dict[str, Any] = {"framing": {}}

    def note(server: _harness.Worker, library: str, loop: str) -> _harness.Worker:
        if library == "anynet":
            anynet["version"] = server.hello["version"]
            anynet["framing"][loop] = server.hello["framing"]
        return server

    def measure(cell: dict[str, Any], library: str) -> dict[str, Any]:
        loop = cell["loop"]
        try:
            client = workers.get("client", library, loop)
            if cell["kind"] == "memory":
                # A fresh server each time: a used one reuses freed memory.
                server = note(_harness.Worker("server", library, loop), library, loop)
                return measure_memory(server, client, arguments.connections)
            server = note(workers.get("server", library, loop), library, loop)
            concurrency = 1 if cell["kind"] == "handshakes-sequential" else CONCURRENT_HANDSHAKES
            command = {
                "op": "handshakes",
                "port": server.hello["port"],
                "concurrency": concurrency,
                "warmup": arguments.warmup,
                "duration": arguments.duration,
            }
            return client.request(command, arguments.warmup + arguments.duration + 60)
        except _harness.WorkerError as error:
            print(f"  {error}", file=sys.stderr)
            workers.stop(library, loop)
            return {"error": str(error)}

    started = datetime.datetime.now(datetime.timezone.utc)
    machine = _harness.machine_description()
    try:
        records = _harness.run_interleaved(
            cells,
            libraries,
            arguments.repeats,
            measure,
            lambda cell: f"{cell['kind']} {cell['loop']}",
            show,
        )
    finally:
        workers.stop_all()
    for record in records:
        for run in record["runs"]:
            for reply in run.values():
                if figure(reply) is not None:
                    reply["value"] = figure(reply)
    machine["load_average_at_end"] = _harness.load_average()
    _harness.summarize(records, libraries, "value")

    results = {
        "benchmark": "connections",
        "units": {"memory": "bytes per idle connection (server RSS)", "handshakes": "per second"},
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(
            ["python", "benchmarks/connections.py"] + (argv if argv is not None else sys.argv[1:])
        ),
        "quick": arguments.quick,
        "settings": {
            "repeats": arguments.repeats,
            "warmup_seconds": arguments.warmup,
            "duration_seconds": arguments.duration,
            "idle_connections": arguments.connections,
            "opening_concurrency": OPENING_CONCURRENCY,
            "concurrent_handshake_clients": CONCURRENT_HANDSHAKES,
        },
        "machine": machine,
        "anynet": dict(anynet, commit=machine["anynet_commit"]),
        "libraries": libraries,
        "skipped": skipped,
        "cells": records,
    }
    stem = "connections-quick" if arguments.quick else "connections"
    _harness.write_json(arguments.output / f"{stem}.json", results)
    report = render_markdown(results)
    (arguments.output / f"{stem}.md").write_text(report)
    print(report)


def number(cell: dict[str, Any], value: float) -> str:
    return f"{value / 1024:.1f} KiB" if cell["kind"] == "memory" else f"{value:,.0f}"


def render_markdown(results: dict[str, Any]) -> str:
    settings = results["settings"]
    table = _harness.markdown_table(
        results["cells"],
        results["libraries"],
        ("measure", "loop"),
        lambda cell: (ROW_TITLES[cell["kind"]], cell["loop"]),
        number,
    )
    repeats = _harness.plural(settings["repeats"], "interleaved repeat")
    intro = (
        f"Connection costs (median of {repeats}); in brackets "
        f"the median ratio to picows within each repeat (memory: lower is better). Memory: "
        f"{settings['idle_connections']} idle connections; handshakes: connect, opening "
        f"handshake, closing handshake, close, for {settings['duration_seconds']} s after "
        f"{settings['warmup_seconds']} s (not for raw TCP: see connections.py)."
    )
    return _harness.report(intro, table, results)


if __name__ == "__main__":
    main()
