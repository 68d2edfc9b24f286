"""Client driver for the Autobahn|Testsuite fuzzing server (anynet as the client).

Reads ``AUTOBAHN_URL`` (e.g. ``ws://127.0.0.1:9001``), ``AUTOBAHN_AGENT`` and
``AUTOBAHN_CASE_TIMEOUT`` from the environment (``--url``, ``--agent`` and
``--case-timeout`` override them), then:

1. asks ``/getCaseCount`` how many cases the run selected;
2. runs each case in turn: connects to ``/runCase?case=N&agent=AGENT`` and
   echoes every message with its own type until the connection ends; a
   ``WSError`` is how many cases end (they break the protocol on purpose), so
   it is counted, not fatal;
3. opens ``/updateReports?agent=AGENT`` so the suite writes its report.

Every step uses anynet's own client. Limits as for the echo server: messages
up to 32 MiB, no keep-alive pings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import urllib.parse
from collections import Counter

from anynet import websocket

LARGEST_MESSAGE = 32 * 1024 * 1024
CLIENT_OPTIONS = {"max_message_size": LARGEST_MESSAGE, "ping_interval": None}


async def run_case(url: str) -> None:
    async with websocket.connect(url, **CLIENT_OPTIONS) as client:
        async for message in client:
            if isinstance(message, bytes):
                await client.send(message)
            else:
                await client.send_text(message)


async def case_count(base_url: str) -> int:
    async with websocket.connect(f"{base_url}/getCaseCount", **CLIENT_OPTIONS) as client:
        return int(await client.recv_text())


async def update_reports(base_url: str, agent: str) -> None:
    async with websocket.connect(f"{base_url}/updateReports?agent={agent}", **CLIENT_OPTIONS):
        pass


async def drive(base_url: str, agent: str, case_timeout: float) -> None:
    quoted_agent = urllib.parse.quote(agent)
    count = await case_count(base_url)
    print(f"driver: {count} cases, agent {agent}", flush=True)
    outcomes: Counter[str] = Counter()
    for case in range(1, count + 1):
        url = f"{base_url}/runCase?case={case}&agent={quoted_agent}"
        try:
            await asyncio.wait_for(run_case(url), case_timeout)
            outcomes["closed normally"] += 1
        except asyncio.TimeoutError:
            outcomes["timed out"] += 1
            print(f"driver: case {case} did not end within {case_timeout:g} s", flush=True)
        except websocket.WSError as error:
            outcomes[f"ended by {type(error).__name__}"] += 1
    await update_reports(base_url, quoted_agent)
    print("driver: " + ", ".join(f"{n} {how}" for how, n in sorted(outcomes.items())), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("AUTOBAHN_URL", "ws://127.0.0.1:9001"))
    parser.add_argument("--agent", default=os.environ.get("AUTOBAHN_AGENT", "anynet"))
    parser.add_argument(
        "--case-timeout", type=float, default=float(os.environ.get("AUTOBAHN_CASE_TIMEOUT", "120"))
    )
    args = parser.parse_args()
    asyncio.run(drive(args.url.rstrip("/"), args.agent, args.case_timeout))


if __name__ == "__main__":
    main()
