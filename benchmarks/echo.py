"""Side-by-side echo benchmark: anynet, picows, websockets, aiohttp and a raw TCP ceiling.

Each library's echo server and its client run in two separate processes on
127.0.0.1.  The client counts round trips completed (messages sent and echoed back)
per second, over a fixed window after a warm-up, in three modes:

- ``ping-pong``: one connection, one message in flight: per-message latency cost.
- ``pipelined``: one connection, many messages in flight (128 up to 4 KiB, 16 of
  64 KiB, 4 of 1 MiB, so at most 4 MiB is in flight): throughput.
- ``many``: 100 connections in one client process, each ping-pong, all served by
  one server process: the game-server pattern.  1 MiB is left out of this mode
  (100 MiB in flight each way measures the allocator, not the library).

Each library's server is driven by the same library's client; ``--client picows``
drives every WebSocket server with picows's client instead, to compare the servers
alone (in the many mode the client process works as hard as the server). A column
``SERVER/CLIENT``, e.g. ``--libs anynet,picows,anynet/picows``, pairs one library's
server with another's client in the same run.

Every cell is measured pinned (client and server processes on one CPU, so each
figure is the CPU time both spend per message) and unpinned (each free to use any
CPU, so the two processes overlap), unless ``--pinning`` picks one. Beside the
round trips per second, the tables give the server process's and the client
process's CPU time per message (from ``/proc``), so a faster server can be told
from a faster client.

Binary messages of 16 B, 256 B, 4 KiB, 64 KiB and 1 MiB; the standard asyncio loop
and uvloop.  The first reply on every connection is compared byte for byte and
every later one by length, so a broken echo cannot report a speed.

    python benchmarks/echo.py            # full run, under ten minutes
    python benchmarks/echo.py --quick    # under a minute
    python benchmarks/echo.py --libs anynet,picows --modes pipelined --sizes 16,4k --loop uvloop
    python benchmarks/echo.py --libs anynet,anynet/picows,picows --pinning pinned

Writes ``results/echo.json`` (every raw figure, the machine, library versions),
``results/echo.md`` (the table of medians and ratios to picows) and
``results/echo.png`` (the plot); ``--quick`` writes ``echo-quick.*`` and
``--client picows`` ``echo-picows-client.*`` instead.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from typing import Any

import _harness
import _peers

SIZES = (16, 256, 4096, 65536, 1024 * 1024)
MODES = ("ping-pong", "pipelined", "many")
MANY_CONNECTIONS = 100
LARGEST_SIZE_WITH_MANY_CONNECTIONS = 65536
MODE_TITLES = {
    "ping-pong": "ping-pong",
    "pipelined": "pipelined",
    "many": f"{MANY_CONNECTIONS} connections",
}

FULL = {"repeats": 3, "warmup": 0.3, "duration": 0.8}
QUICK = {"repeats": 1, "warmup": 0.1, "duration": 0.15}


def pipeline_window(size: int) -> int:
    """Messages in flight when pipelining: deep for small messages, at most 4 MiB in all."""
    if size <= 4096:
        return 128
    return max(1, min(128, 4 * 1024 * 1024 // size))


def cells_to_run(
    modes: list[str], sizes: list[int], loops: list[str], pinnings: list[str]
) -> list[dict[str, Any]]:
    cells = []
    for pinning in pinnings:
        for mode in modes:
            for size in sizes:
                if mode == "many" and size > LARGEST_SIZE_WITH_MANY_CONNECTIONS:
                    continue
                for loop in loops:
                    cells.append(
                        {
                            "mode": mode,
                            "size": size,
                            "loop": loop,
                            "pinning": pinning,
                            "window": pipeline_window(size) if mode == "pipelined" else 1,
                            "connections": MANY_CONNECTIONS if mode == "many" else 1,
                        }
                    )
    return cells


def describe(cell: dict[str, Any]) -> str:
    return f"{cell['mode']} {_harness.size_label(cell['size'])} {cell['loop']} {cell['pinning']}"


def show(reply: dict[str, Any]) -> str:
    return f"{reply['rate']:,.0f}/s" if "rate" in reply else "FAILED"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="one short repeat: under a minute")
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="both")
    parser.add_argument(
        "--pinning",
        choices=("pinned", "unpinned", "both"),
        default="both",
        help="client and server on one CPU, on any, or each cell both ways (the default)",
    )
    parser.add_argument(
        "--libs",
        default=",".join(_peers.LIBRARIES),
        help="comma-separated, of: " + ", ".join(_peers.LIBRARIES)
        + "; SERVER/CLIENT pairs one library's server with another's client",
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES)
    )
    parser.add_argument(
        "--client",
        choices=_peers.WEBSOCKET_LIBRARIES,
        help="drive every WebSocket server with this library's client (raw keeps its own): "
        "compares the servers alone",
    )
    parser.add_argument(
        "--sizes",
        default="16,256,4k,64k,1m",
        help="comma-separated message sizes in bytes, k (KiB) or m (MiB)",
    )
    parser.add_argument("--repeats", type=int, help="interleaved repeats (full 3, quick 1)")
    parser.add_argument(
        "--warmup", type=float, help="seconds before each window (full 0.3, quick 0.1)"
    )
    parser.add_argument("--duration", type=float, help="seconds measured (full 0.8, quick 0.15)")
    return _harness.parse_with_defaults(parser, argv, QUICK, FULL)


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    loops = _harness.loops_from_option(arguments.loop)
    requested = _harness.parse_list(arguments.libs, _peers.LIBRARIES, "libraries", pairs=True)
    modes = _harness.parse_list(arguments.modes, MODES, "modes")
    sizes = [_harness.parse_size(size) for size in arguments.sizes.split(",")]
    libraries, skipped = _harness.usable_libraries(_harness.default_library_order(requested), loops)
    if not libraries:
        raise SystemExit("no library to measure")
    cells = cells_to_run(modes, sizes, loops, _harness.pinnings_from_option(arguments.pinning))

    workers = _harness.Workers()
    anynet: dict[str, Any] = {"framing": {}}

    def libraries_of(library: str) -> tuple[str, str]:
        server, client = _harness.server_and_client(library)
        if arguments.client and server != "raw" and "/" not in library:
            client = arguments.client
        return server, client

    def measure(cell: dict[str, Any], library: str) -> dict[str, Any]:
        server_library, client_library = libraries_of(library)
        command = {
            "op": "echo",
            "pattern": "ping-pong" if cell["mode"] == "many" else cell["mode"],
            "size": cell["size"],
            "window": cell["window"],
            "connections": cell["connections"],
            "warmup": arguments.warmup,
            "duration": arguments.duration,
        }
        try:
            server = workers.get("server", server_library, cell["loop"])
            client = workers.get("client", client_library, cell["loop"])
            _harness.pin((server.pid, client.pid), _harness.cpus_for(cell["pinning"]))
            if "version" in server.hello:
                anynet["version"] = server.hello["version"]
                anynet["framing"][cell["loop"]] = server.hello["framing"]
            # Generous: the slowest library moving 1 MiB messages still answers in seconds.
            timeout = arguments.warmup + arguments.duration + 60
            return client.request(
                dict(command, port=server.hello["port"], server_pid=server.pid), timeout
            )
        except _harness.WorkerError as error:
            print(f"  {error}", file=sys.stderr)
            workers.stop(library, cell["loop"])
            return {"error": str(error)}

    started = datetime.datetime.now(datetime.timezone.utc)
    machine = _harness.machine_description()
    try:
        records = _harness.run_interleaved(
            cells, libraries, arguments.repeats, measure, describe, show
        )
    finally:
        workers.stop_all()
    machine["load_average_at_end"] = _harness.load_average()
    _harness.summarize(records, libraries, "rate")
    _harness.summarize(records, libraries, "server_cpu_us", into="server_cpu_us")
    _harness.summarize(records, libraries, "client_cpu_us", into="client_cpu_us")

    results = {
        "benchmark": "echo",
        "unit": "round trips per second",
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(
            ["python", "benchmarks/echo.py"] + (argv if argv is not None else sys.argv[1:])
        ),
        "quick": arguments.quick,
        "settings": {
            "repeats": arguments.repeats,
            "warmup_seconds": arguments.warmup,
            "duration_seconds": arguments.duration,
            "many_connections": MANY_CONNECTIONS,
            "client": arguments.client or "each library's own",
            "pinning": arguments.pinning,
            "pinned_cpu": max(_harness.cpus_for("pinned")),
            "pipeline_windows": {
                _harness.size_label(size): pipeline_window(size) for size in sizes
            },
        },
        "machine": machine,
        "anynet": dict(anynet, commit=machine["anynet_commit"]),
        "libraries": libraries,
        "mode_titles": MODE_TITLES,
        "skipped": skipped,
        "cells": records,
    }
    stem = "echo" + ("-quick" if arguments.quick else "")
    if arguments.client:
        stem += f"-{arguments.client}-client"
    _harness.write_json(arguments.output / f"{stem}.json", results)
    report = render_markdown(results)
    (arguments.output / f"{stem}.md").write_text(report)
    print(report)
    try:
        import plot
    except ImportError as error:
        print(f"no plot ({error}); install the bench extra for matplotlib", file=sys.stderr)
    else:
        plot.plot_echo(results, arguments.output / f"{stem}.png")


def render_markdown(results: dict[str, Any]) -> str:
    settings = results["settings"]
    titles = results.get("mode_titles", MODE_TITLES)

    def row(cell: dict[str, Any]) -> tuple[str, ...]:
        return (
            titles[cell["mode"]],
            _harness.size_label(cell["size"]),
            cell["loop"],
            cell.get("pinning", "unpinned"),
        )

    def table(summary: str | None, number: str) -> str:
        return _harness.markdown_table(
            results["cells"],
            results["libraries"],
            ("mode", "size", "loop", "CPUs"),
            row,
            lambda cell, value: format(value, number),
            summary,
        )

    repeats = _harness.plural(settings["repeats"], "interleaved repeat")
    intro = (
        f"Echo round trips per second (median of {repeats} of "
        f"{settings['duration_seconds']} s after {settings['warmup_seconds']} s warm-up); in "
        f"brackets the median ratio to picows within each repeat (higher is better). "
        f"Clients: {settings['client']}; a column SERVER/CLIENT pairs two libraries. "
        f"Pinned: client and server on one CPU; unpinned: on any."
    )
    sections = [
        table(None, ",.0f"),
        "Server process CPU time per message, µs (in brackets the ratio to picows's "
        "server: lower is better):",
        table("server_cpu_us", ".2f"),
        "Client process CPU time per message, µs (ratio to picows's client):",
        table("client_cpu_us", ".2f"),
    ]
    return _harness.report(intro, "\n\n".join(sections), results)


if __name__ == "__main__":
    main()
