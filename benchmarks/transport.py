"""The layer under the frames: TLS and socket transports, side by side, on both loops.

What the transport and TLS layer decides, for anynet and picows (both on
aiofastnet's compiled transports), each library's server and client in processes
of their own as in ``echo.py``:

- ``memory``: server memory per idle wss:// connection (``connections.py``'s method).
- ``cpu``: plain ws:// ping-pong of 256 B, the server process's CPU time (user +
  system, from /proc) per message in the measured window.
- ``handshakes``: connect, opening handshake, closing handshake, close, per second,
  with 1 and 16 concurrent clients, over ws:// and wss://.
- ``tls-echo``: wss:// echo, ping-pong and pipelined (window 16), 256 B and 64 KiB,
  round trips per second.

Repeats are interleaved and ratios to picows taken within each repeat.

    python benchmarks/transport.py             # a few minutes
    python benchmarks/transport.py --quick

Writes ``results/transport.json`` and ``results/transport.md`` (``--quick``:
``transport-quick.*``).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from typing import Any

import _harness
import _peers
import connections

LIBRARIES = ("anynet", "picows")
METRICS = ("memory", "cpu", "handshakes", "tls-echo")
PIPELINE_WINDOW = 16
CPU_MESSAGE_SIZE = 256
ECHO_SIZES = (256, 64 * 1024)

FULL = {"repeats": 3, "warmup": 0.3, "duration": 1.5, "connections": 1000}
QUICK = {"repeats": 1, "warmup": 0.1, "duration": 0.3, "connections": 1000}


def cells_to_run(
    metrics: list[str], loops: list[str], pinnings: list[str]
) -> list[dict[str, Any]]:
    """Memory and CPU time are measured unpinned only: pinning would not change them."""
    cells: list[dict[str, Any]] = []
    for metric in metrics:
        for loop in loops:
            if metric == "memory":
                cells.append({"kind": "memory", "loop": loop, "secure": True, "pinning": "unpinned"})
            elif metric == "cpu":
                cells.append({"kind": "cpu", "loop": loop, "secure": False, "pinning": "unpinned"})
            elif metric == "handshakes":
                for pinning in pinnings:
                    for secure in (False, True):
                        for concurrency in (1, 16):
                            cells.append(
                                {"kind": "handshakes", "loop": loop, "secure": secure,
                                 "concurrency": concurrency, "pinning": pinning}
                            )
            else:
                for pinning in pinnings:
                    for pattern in ("ping-pong", "pipelined"):
                        for size in ECHO_SIZES:
                            cells.append(
                                {"kind": "tls-echo", "loop": loop, "secure": True,
                                 "pattern": pattern, "size": size, "pinning": pinning}
                            )
    return cells


def describe(cell: dict[str, Any]) -> str:
    scheme = "wss" if cell["secure"] else "ws"
    if cell["kind"] == "memory":
        return f"idle {scheme} server memory"
    if cell["kind"] == "cpu":
        return f"{scheme} ping-pong {_harness.size_label(CPU_MESSAGE_SIZE)} server CPU"
    if cell["kind"] == "handshakes":
        return f"{scheme} handshakes/s, {_harness.plural(cell['concurrency'], 'client')}"
    return f"{scheme} {cell['pattern']} {_harness.size_label(cell['size'])} round trips/s"


def show(reply: dict[str, Any]) -> str:
    if "bytes_per_connection" in reply:
        return f"{reply['bytes_per_connection'] / 1024:.1f} KiB"
    if "cpu_per_message" in reply:
        return f"{reply['cpu_per_message'] * 1e6:.1f} us"
    if "rate" in reply:
        return f"{reply['rate']:,.0f}/s"
    return "FAILED"


def figure(reply: dict[str, Any]) -> float | None:
    for key in ("bytes_per_connection", "cpu_per_message", "rate"):
        if key in reply:
            return float(reply[key])
    return None


def number(cell: dict[str, Any], value: float) -> str:
    if cell["kind"] == "memory":
        return f"{value / 1024:.1f} KiB"
    if cell["kind"] == "cpu":
        return f"{value * 1e6:.1f} µs"
    return f"{value:,.0f}"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="one short repeat")
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="both")
    parser.add_argument(
        "--pinning",
        choices=("pinned", "unpinned", "both"),
        default="both",
        help="handshakes and wss echo: client and server on one CPU, on any, or both",
    )
    parser.add_argument("--libs", default=",".join(LIBRARIES), help="comma-separated libraries")
    parser.add_argument("--metrics", default=",".join(METRICS), help="comma-separated metrics")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (full 3, quick 1)")
    parser.add_argument("--warmup", type=float, help="seconds before each measured window")
    parser.add_argument("--duration", type=float, help="seconds of each measured window")
    parser.add_argument("--connections", type=int, help="idle connections for memory")
    return _harness.parse_with_defaults(parser, argv, QUICK, FULL)


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    loops = _harness.loops_from_option(arguments.loop)
    libraries = _harness.parse_list(arguments.libs, LIBRARIES, "libraries")
    metrics = _harness.parse_list(arguments.metrics, METRICS, "metrics")
    libraries, skipped = _harness.usable_libraries(libraries, loops)
    cells = cells_to_run(metrics, loops, _harness.pinnings_from_option(arguments.pinning))
    workers = _harness.Workers()
    anynet: dict[str, Any] = {"framing": {}}
    window = arguments.warmup + arguments.duration

    def measure(cell: dict[str, Any], library: str) -> dict[str, Any]:
        loop, secure = cell["loop"], cell["secure"]
        try:
            client = workers.get("client", library, loop, secure)
            if cell["kind"] == "memory":
                server = _harness.Worker("server", library, loop, secure=secure)
            else:
                server = workers.get("server", library, loop, secure)
            if library == "anynet":
                anynet["version"] = server.hello["version"]
                anynet["framing"][loop] = server.hello["framing"]
            port = server.hello["port"]
            _harness.pin((server.pid, client.pid), _harness.cpus_for(cell["pinning"]))
            if cell["kind"] == "memory":
                return connections.measure_memory(server, client, arguments.connections)
            if cell["kind"] == "handshakes":
                command = {"op": "handshakes", "port": port, "concurrency": cell["concurrency"],
                           "warmup": arguments.warmup, "duration": arguments.duration}
                return client.request(command, window + 60)
            size = CPU_MESSAGE_SIZE if cell["kind"] == "cpu" else cell["size"]
            pattern = "ping-pong" if cell["kind"] == "cpu" else cell["pattern"]
            command = {"op": "echo", "port": port, "server_pid": server.pid, "pattern": pattern,
                       "size": size, "window": PIPELINE_WINDOW, "connections": 1,
                       "warmup": arguments.warmup, "duration": arguments.duration}
            reply = client.request(command, window + 60)
            if cell["kind"] == "cpu":
                return {"cpu_per_message": reply["server_cpu_us"] / 1e6, **reply}
            return reply
        except _harness.WorkerError as error:
            print(f"  {error}", file=sys.stderr)
            workers.stop(library, loop, secure)
            return {"error": str(error)}

    started = datetime.datetime.now(datetime.timezone.utc)
    machine = _harness.machine_description()
    try:
        records = _harness.run_interleaved(
            cells, libraries, arguments.repeats, measure,
            lambda cell: f"{describe(cell)} on {cell['loop']}, {cell['pinning']}", show,
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
        "benchmark": "transport",
        "units": {"memory": "bytes per idle connection (server RSS)",
                  "cpu": "server CPU seconds per message", "handshakes": "per second",
                  "tls-echo": "round trips per second"},
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(
            ["python", "benchmarks/transport.py"] + (argv if argv is not None else sys.argv[1:])
        ),
        "quick": arguments.quick,
        "settings": {"repeats": arguments.repeats, "warmup_seconds": arguments.warmup,
                     "duration_seconds": arguments.duration,
                     "idle_connections": arguments.connections,
                     "pinning": arguments.pinning,
                     "pinned_cpu": max(_harness.cpus_for("pinned")),
                     "pipeline_window": PIPELINE_WINDOW},
        "machine": machine,
        "anynet": dict(anynet, commit=machine["anynet_commit"]),
        "libraries": libraries,
        "skipped": skipped,
        "cells": records,
    }
    stem = "transport-quick" if arguments.quick else "transport"
    _harness.write_json(arguments.output / f"{stem}.json", results)
    report = render_markdown(results)
    (arguments.output / f"{stem}.md").write_text(report)
    print(report)


def render_markdown(results: dict[str, Any]) -> str:
    settings = results["settings"]
    table = _harness.markdown_table(
        results["cells"], results["libraries"], ("measure", "loop", "pinning"),
        lambda cell: (describe(cell), cell["loop"], cell["pinning"]), number,
    )
    repeats = _harness.plural(settings["repeats"], "interleaved repeat")
    intro = (
        f"Transport and TLS costs (median of {repeats}); in brackets the median ratio to "
        f"picows within each repeat (memory and CPU: lower is better). Memory: "
        f"{settings['idle_connections']} idle connections; CPU: the server process's user + "
        f"system time per message of a ping-pong run; windows of "
        f"{settings['duration_seconds']} s after {settings['warmup_seconds']} s; pipelined "
        f"keeps {settings['pipeline_window']} messages in flight. Pinned: client and server "
        f"on one CPU (every figure is CPU time); unpinned: on any."
    )
    return _harness.report(intro, table, results)


if __name__ == "__main__":
    main()
