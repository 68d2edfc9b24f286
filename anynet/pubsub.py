"""Topics: publish a message once, reach every connection subscribed to it.

A hub keeps, for each topic, the connections subscribed to it in this
process, and delivers a published message to them with ``broadcast``'s
policies: encoded into one frame, written without waiting, a slow connection
skipped (``"skip"``) or given everything in order up to ``max_backlog`` and
then closed with 1013 (``"reliable"``). A connection's subscriptions end
when it closes.

Two hubs with one interface:

* ``Hub``, in-process: the connections of this process only. The default;
  it needs no server.
* ``RedisHub``, the same plus Redis pub/sub between processes and
  machines: ``publish`` also reaches the subscribers of every other process
  connected to the same Redis. See its documentation for failures.

::

    hub = pubsub.Hub()  # or pubsub.RedisHub("redis://127.0.0.1:6379")

    async def player(client):
        room = client.request.params.get("room", "lobby")
        await hub.subscribe(client, room)
        async for message in client:
            hub.publish(room, message)

    async with hub, websocket.serve(player, "0.0.0.0", 8000):
        await asyncio.Event().wait()
"""

from anynet._broadcast import DEFAULT_MAX_BACKLOG, BroadcastResult, DeliveryPolicy
from anynet._hub import Hub, HubStats
from anynet._redis_hub import DEFAULT_MAX_OUTGOING, RedisHub

__all__ = [
    "DEFAULT_MAX_BACKLOG",
    "DEFAULT_MAX_OUTGOING",
    "BroadcastResult",
    "DeliveryPolicy",
    "Hub",
    "HubStats",
    "RedisHub",
]
