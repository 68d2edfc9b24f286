"""What the benchmark scripts share: worker processes, interleaved repeats, statistics, reports.

Every library runs its server and its client in two processes of their own (see
``_worker.py``), started once per event loop and reused, so each process gets a core
of its own on a two-core machine and no measurement pays for an interpreter start.

Repeats are interleaved: repeat 1 measures every cell for every library, then repeat
2 does it all again, and so on, with the order of the libraries rotated each time.
A library therefore never has the machine to itself in a quiet minute while another
gets the busy one, and a ratio to picows is computed between two figures of the same
repeat and cell, measured seconds apart, before taking the median over repeats.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import _peers

BENCHMARKS = Path(__file__).resolve().parent
REPOSITORY = BENCHMARKS.parent
WORKER = BENCHMARKS / "_worker.py"
REFERENCE = "picows"

IMPORTS = {
    "anynet": "anynet.websocket",
    "anynet-callback": "anynet.websocket",
    "picows": "picows",
    "websockets": "websockets.asyncio.server",
    "aiohttp": "aiohttp.web",
    "raw": "asyncio",
    "uvloop": "uvloop",
}


class WorkerError(Exception):
    """A worker process failed, exited or did not answer in time."""


def worker_environment() -> dict[str, str]:
    """Workers import anynet from this source tree, with its in-place built extension."""
    environment = dict(os.environ)
    paths = [str(REPOSITORY)] + [
        p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p
    ]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    return environment


def server_and_client(library: str) -> tuple[str, str]:
    """The server's and the client's library of a column: ``anynet``, or
    ``anynet/picows`` for anynet's server driven by picows's client."""
    server, _, client = library.partition("/")
    return server, client or server


def pin(pids: Iterable[int], cpus: set[int]) -> None:
    """Let every thread of the processes ``pids`` run on ``cpus`` only."""
    for pid in pids:
        for thread in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(thread), cpus)


def pinnings_from_option(option: str) -> list[str]:
    return ["pinned", "unpinned"] if option == "both" else [option]


def cpus_for(pinning: str) -> set[int]:
    """``pinned``: one CPU (the last this process may use) for client and server, so
    every figure is CPU time spent per message; ``unpinned``: every CPU allowed."""
    allowed = os.sched_getaffinity(0)
    return {max(allowed)} if pinning == "pinned" else set(allowed)


def unavailable_reason(name: str) -> str | None:
    """Why a library (or uvloop) cannot be imported by a worker, or None when it can."""
    result = subprocess.run(
        [sys.executable, "-c", f"import {IMPORTS[name]}"],
        cwd=REPOSITORY,
        env=worker_environment(),
        capture_output=True,
        text=True,
    )
    if result.returncode == 0:
        return None
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else f"import {IMPORTS[name]} failed"


class Worker:
    """One worker process and the JSON-lines conversation with it."""

    def __init__(
        self, role: str, library: str, loop: str, start_timeout: float = 60, secure: bool = False
    ) -> None:
        self.name = f"{library} {role} on {loop}" + (" over TLS" if secure else "")
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), role, library, loop] + (["tls"] if secure else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPOSITORY,
            env=worker_environment(),
            text=True,
        )
        # A thread turns the worker's output into a queue, so every read can time out.
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read_lines, daemon=True).start()
        self.hello = self._reply(start_timeout)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_lines(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put("")

    def _reply(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise WorkerError(f"{self.name}: no answer within {timeout:.0f} s") from None
        if not line:
            raise WorkerError(f"{self.name}: exited with status {self.process.wait()}")
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(f"{self.name}: {reply['error']}")
        return reply

    def request(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(f"{self.name}: has exited") from None
        return self._reply(timeout)

    def stop(self) -> None:
        """Close stdin (the worker's signal to finish), then insist."""
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


class Workers:
    """The server and client process of each (library, loop), started on first use."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, str, str, bool], Worker] = {}

    def get(self, role: str, library: str, loop: str, secure: bool = False) -> Worker:
        key = (role, library, loop, secure)
        if key not in self._running:
            self._running[key] = Worker(role, library, loop, secure=secure)
        return self._running[key]

    def stop(self, library: str, loop: str, secure: bool = False) -> None:
        """Stop the pair, e.g. after a failure; the next measurement starts a fresh one."""
        server, client = server_and_client(library)
        for role, name in (("client", client), ("server", server)):
            worker = self._running.pop((role, name, loop, secure), None)
            if worker is not None:
                worker.stop()

    def stop_all(self) -> None:
        for worker in self._running.values():
            worker.stop()
        self._running.clear()


def machine_description() -> dict[str, Any]:
    """The machine and software the figures come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load_average_at_start": load_average(),
        "libraries": _peers.library_versions(),
        "anynet_commit": git_commit(),
    }


def load_average() -> tuple[float, float, float] | None:
    """1, 5 and 15 minute load averages: how busy the machine was around a run."""
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def git_commit() -> str | None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit} (uncommitted changes)" if dirty else commit


def rotated(libraries: Sequence[str], repeat: int) -> list[str]:
    shift = repeat % len(libraries)
    return list(libraries[shift:]) + list(libraries[:shift])


def run_interleaved(
    cells: Sequence[dict[str, Any]],
    libraries: Sequence[str],
    repeats: int,
    measure: Callable[[dict[str, Any], str], dict[str, Any]],
    describe: Callable[[dict[str, Any]], str],
    show: Callable[[dict[str, Any]], str],
) -> list[dict[str, Any]]:
    """Measure every cell for every library, ``repeats`` times over, interleaved.

    Returns the cells, each with ``runs``: one dict per repeat from library to the
    worker's reply (a figure, or ``{"error": ...}``).  A cell's ``not_measured``
    lists libraries the cell does not apply to.
    """
    records = [dict(cell, runs=[{} for _ in range(repeats)]) for cell in cells]
    started = time.monotonic()
    for repeat in range(repeats):
        for record in records:
            line = []
            for library in rotated(libraries, repeat):
                if library in record.get("not_measured", ()):
                    continue
                reply = measure(record, library)
                record["runs"][repeat][library] = reply
                line.append(f"{library} {show(reply)}")
            elapsed = time.monotonic() - started
            print(
                f"[{elapsed:5.0f} s] repeat {repeat + 1}/{repeats} {describe(record)}: "
                + ", ".join(line),
                file=sys.stderr,
                flush=True,
            )
    return records


def summarize(
    records: Iterable[dict[str, Any]],
    libraries: Sequence[str],
    metric: str,
    into: str | None = None,
) -> None:
    """Add to each record the median of ``metric`` and the median ratio to picows
    (as ``median`` and ``ratio_to_picows``, or within ``record[into]``).

    The ratio is taken within each repeat (same cell, measured seconds apart), then
    the median of those ratios is reported; repeats where either figure failed are
    left out of the ratio.
    """
    for record in records:
        target = record if into is None else record.setdefault(into, {})
        medians: dict[str, float | None] = {}
        ratios: dict[str, float | None] = {}
        for library in libraries:
            values = [
                run[library][metric] for run in record["runs"] if metric in run.get(library, {})
            ]
            medians[library] = statistics.median(values) if values else None
            paired = [
                run[library][metric] / run[REFERENCE][metric]
                for run in record["runs"]
                if metric in run.get(library, {}) and run.get(REFERENCE, {}).get(metric)
            ]
            ratios[library] = statistics.median(paired) if paired else None
        target["median"] = medians
        target["ratio_to_picows"] = ratios
        record["errors"] = sorted(
            {
                run[library]["error"]
                for run in record["runs"]
                for library in run
                if "error" in run[library]
            }
        )


def markdown_table(
    records: Sequence[dict[str, Any]],
    libraries: Sequence[str],
    row_headers: Sequence[str],
    row_cells: Callable[[dict[str, Any]], Sequence[str]],
    number: Callable[[dict[str, Any], float], str],
    summary: str | None = None,
) -> str:
    """Rows of medians, each library's figure followed by its median ratio to picows
    (those ``summarize`` stored in the record, or in ``record[summary]``)."""
    with_ratio = REFERENCE in libraries
    header = list(row_headers) + [
        f"{library} (× {REFERENCE})" if with_ratio and library != REFERENCE else library
        for library in libraries
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(row_headers) + "---:|" * len(libraries),
    ]
    for record in records:
        cells = list(row_cells(record))
        figures = record if summary is None else record[summary]
        for library in libraries:
            median = figures["median"][library]
            ratio = figures["ratio_to_picows"][library]
            if median is None:
                cells.append("–" if library in record.get("not_measured", ()) else "failed")
            elif with_ratio and library != REFERENCE and ratio is not None:
                cells.append(f"{number(record, median)} ({ratio:.2f}×)")
            else:
                cells.append(number(record, median))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_run(results: dict[str, Any]) -> str:
    """The machine, the versions, and how busy the machine was: the footer of a report."""
    machine = results["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in machine["libraries"].items())
    anynet = results["anynet"]
    framing = ", ".join(
        f"{backend} core on {loop}" for loop, backend in anynet["framing"].items()
    )
    text = (
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['platform']}, "
        f"{machine['python']}. Versions: {versions}."
    )
    if framing:
        text += f" anynet {anynet['version']} at {anynet['commit']}, {framing}."
    text += f" Started {results['started']}"
    start, end = machine.get("load_average_at_start"), machine.get("load_average_at_end")
    if start and end:
        text += f"; load average {start[0]:.2f} at the start, {end[0]:.2f} at the end"
    return text + "."


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def size_label(size: int) -> str:
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


def parse_size(text: str) -> int:
    """``16``, ``4k``, ``64KiB``, ``1m``, ``1MiB`` -> bytes."""
    cleaned = text.strip().lower().replace("ib", "").replace(" ", "").rstrip("b")
    factor = 1
    if cleaned.endswith("k"):
        factor, cleaned = 1024, cleaned[:-1]
    elif cleaned.endswith("m"):
        factor, cleaned = 1024 * 1024, cleaned[:-1]
    return int(cleaned) * factor


def parse_list(
    text: str, allowed: Sequence[str], what: str, pairs: bool = False
) -> list[str]:
    """A comma-separated choice; with ``pairs``, ``server/client`` of two allowed names too."""
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [
        item
        for item in chosen
        if not all(part in allowed for part in (server_and_client(item) if pairs else (item,)))
    ]
    if unknown or not chosen:
        raise SystemExit(
            f"unknown {what}: {', '.join(unknown) or text!r}; choose from {', '.join(allowed)}"
        )
    return chosen


def loops_from_option(option: str) -> list[str]:
    return ["asyncio", "uvloop"] if option == "both" else [option]


def usable_libraries(
    requested: Sequence[str], loops: Sequence[str]
) -> tuple[list[str], dict[str, str]]:
    """The requested libraries a worker can import, and why the others cannot."""
    skipped: dict[str, str] = {}
    if "uvloop" in loops:
        reason = unavailable_reason("uvloop")
        if reason:
            raise SystemExit(f"uvloop is not usable here ({reason}); use --loop asyncio")
    usable = []
    for library in requested:
        reason = next(filter(None, map(unavailable_reason, set(server_and_client(library)))), None)
        if reason:
            skipped[library] = reason
            print(f"skipping {library}: {reason}", file=sys.stderr)
        else:
            usable.append(library)
    return usable, skipped


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def default_library_order(libraries: Iterable[str]) -> list[str]:
    """Libraries in the canonical column order, whatever order they were asked in;
    server/client pairs follow their server's library."""
    chosen = set(libraries)
    order = {library: index for index, library in enumerate(_peers.LIBRARIES)}
    return sorted(chosen, key=lambda name: (order[server_and_client(name)[0]], name))


def report(intro: str, table: str, results: dict[str, Any]) -> str:
    """The markdown report of a run: what was measured, the table, the machine,
    then what could not be measured and every failure."""
    lines = [intro, "", table, "", describe_run(results)]
    if results["skipped"]:
        lines.append("")
        lines.extend(f"Not measured: {name} ({reason})." for name, reason in results["skipped"].items())
    errors = sorted({error for cell in results["cells"] for error in cell["errors"]})
    if errors:
        lines.append("")
        lines.extend(f"Failure: {error}" for error in errors)
    return "\n".join(lines) + "\n"


def parse_with_defaults(parser: Any, argv: Any, quick: dict[str, Any], full: dict[str, Any]) -> Any:
    """Add the shared ``--output`` option, parse, and fill what was not given
    from the quick or the full settings."""
    parser.add_argument("--output", type=Path, default=BENCHMARKS / "results", help="results directory")
    arguments = parser.parse_args(argv)
    for name, value in (quick if arguments.quick else full).items():
        if getattr(arguments, name) is None:
            setattr(arguments, name, value)
    return arguments
