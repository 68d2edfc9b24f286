"""How a message wakes its receiver: at once from a callback, the ordinary way otherwise.

``wake_tasks_now`` is private to the connection core; these tests pin down
its three paths, on both backends, which the connection tests go through
without telling them apart.
"""

from __future__ import annotations

import asyncio

from support import TIMEOUT


async def wait_then_log(future, log):
    await future
    log.append("woken")


async def start_waiting(future, log):
    task = asyncio.ensure_future(wait_then_log(future, log))
    await asyncio.sleep(0)  # the task now waits on the future
    return task


def wake_from_a_callback(core, loop, future, log):
    def callback():
        core.wake_tasks_now(loop, [future])
        log.append("callback returned")

    loop.call_soon(callback)


async def log_of_a_wake_up_from_a_callback(core, future):
    log = []
    task = await start_waiting(future, log)
    wake_from_a_callback(core, future.get_loop(), future, log)
    await asyncio.wait_for(task, TIMEOUT)
    return log


async def test_from_a_callback_the_waiting_task_runs_before_it_returns(core):
    future = asyncio.get_running_loop().create_future()
    assert await log_of_a_wake_up_from_a_callback(core, future) == ["woken", "callback returned"]


async def test_inside_a_task_the_waiting_task_runs_later(core):
    loop = asyncio.get_running_loop()
    future, log = loop.create_future(), []
    task = await start_waiting(future, log)
    core.wake_tasks_now(loop, [future])
    log.append("caller went on")
    await asyncio.wait_for(task, TIMEOUT)
    assert log == ["caller went on", "woken"]


async def test_a_future_without_visible_callbacks_completes_the_ordinary_way(core):
    class Opaque(asyncio.Future):
        @property
        def _callbacks(self):
            raise AttributeError("_callbacks")

    future = Opaque(loop=asyncio.get_running_loop())
    assert await log_of_a_wake_up_from_a_callback(core, future) == ["callback returned", "woken"]


async def test_a_cancelled_wait_is_passed_over(core):
    loop = asyncio.get_running_loop()
    cancelled, waiting, log = loop.create_future(), loop.create_future(), []
    cancelled.cancel()
    task = await start_waiting(waiting, log)
    wake_from_a_callback(core, loop, cancelled, log)
    wake_from_a_callback(core, loop, waiting, log)
    await asyncio.wait_for(task, TIMEOUT)
    assert log == ["callback returned", "woken", "callback returned"]
