"""anynet.pubsub: topics on the in-process hub and on a real redis-server."""

from __future__ import annotations

import asyncio
import struct

import pytest

from anynet import pubsub, websocket
from redis_server import RedisServer, redis_server, redis_unix_server  # noqa: F401 (fixtures)
from support import TIMEOUT, url_of


class Members:
    """A server whose handler subscribes each connection to the topics in its
    query string (``?topics=a,b``) and then reads until the connection ends."""

    def __init__(self, hub):
        self.hub = hub
        self.connections = asyncio.Queue()
        self.finished = asyncio.Queue()
        self.every_connection = []

    async def handler(self, client):
        for topic in client.request.params.get("topics", "").split(","):
            if topic:
                await self.hub.subscribe(client, topic)
        await self.connections.put(client)
        self.every_connection.append(client)
        try:
            async for _ in client:
                pass
        finally:
            await client.disconnect()
            # The connection is closed: its subscriptions are gone by now.
            await self.finished.put(self.hub.topics(client))


async def joined(server, members, topics, count=1):
    """Open ``count`` connections subscribed to ``topics``; return them once subscribed."""
    contexts = [
        websocket.connect(url_of(server, "/?topics=" + ",".join(topics))) for _ in range(count)
    ]
    clients = [await context.__aenter__() for context in contexts]
    for _ in clients:
        await asyncio.wait_for(members.connections.get(), TIMEOUT)
    return contexts, clients


async def leave(contexts):
    for context in contexts:
        await context.__aexit__(None, None, None)


# ----------------------------------------------------------------------
# The in-process hub


async def test_publish_reaches_the_subscribers_of_the_topic_only():
    async with pubsub.Hub() as hub:
        members = Members(hub)
        async with websocket.serve(members.handler, "127.0.0.1", 0) as server:
            red, (in_red,) = await joined(server, members, ["red"])
            both, (in_both,) = await joined(server, members, ["red", "blue"])
            blue, (in_blue,) = await joined(server, members, ["blue"])
            try:
                assert hub.publish("red", "to red") == 2
                assert hub.publish("blue", b"\x00blue") == 2
                assert hub.publish("green", "nobody") == 0
                assert await asyncio.wait_for(in_red.recv_text(), TIMEOUT) == "to red"
                assert await asyncio.wait_for(in_both.recv_text(), TIMEOUT) == "to red"
                assert await asyncio.wait_for(in_both.recv(), TIMEOUT) == b"\x00blue"
                assert await asyncio.wait_for(in_blue.recv(), TIMEOUT) == b"\x00blue"
                assert len(hub.subscribers("red")) == 2
                (server_side,) = hub.subscribers("red") & hub.subscribers("blue")
                assert hub.topics(server_side) == {"red", "blue"}
                hub.unsubscribe(server_side, "red")
                hub.unsubscribe(server_side, "red")  # already gone: nothing happens
                assert hub.topics(server_side) == {"blue"}
                assert hub.publish("red", "again") == 1
                assert await asyncio.wait_for(in_red.recv_text(), TIMEOUT) == "again"
                assert hub.stats.published == 4
                assert hub.stats.delivered == 5
            finally:
                await leave(red + both + blue)


async def test_subscriptions_end_when_connections_close():
    async with pubsub.Hub() as hub:
        members = Members(hub)
        async with websocket.serve(members.handler, "127.0.0.1", 0) as server:
            contexts, _ = await joined(server, members, ["a", "b", "c"], count=20)
            assert len(hub.subscribers("a")) == 20
            await leave(contexts)
            for _ in contexts:
                assert await asyncio.wait_for(members.finished.get(), TIMEOUT) == frozenset()
        # Nothing is left of them: no topic, no connection.
        assert hub._subscribers == {} and hub._topics_of == {}
        assert hub.publish("a", b"x") == 0


async def test_a_closed_connection_is_not_subscribed():
    async with pubsub.Hub() as hub:
        members = Members(hub)
        async with websocket.serve(members.handler, "127.0.0.1", 0) as server:
            contexts, _ = await joined(server, members, [])
            await leave(contexts)
            await asyncio.wait_for(members.finished.get(), TIMEOUT)
            (closed,) = members.every_connection
            await hub.subscribe(closed, "late")
            assert hub.subscribers("late") == frozenset() and hub._topics_of == {}


async def test_topic_policies_and_argument_checks():
    hub = pubsub.Hub(policy="reliable")
    with pytest.raises(ValueError):
        pubsub.Hub(policy="often")
    with pytest.raises(ValueError):
        pubsub.Hub(max_backlog=0)
    with pytest.raises(TypeError):
        hub.publish("t", 3)
    with pytest.raises(TypeError):
        hub.publish(b"t", "x")
    with pytest.raises(ValueError):
        hub.publish("", "x")
    with pytest.raises(ValueError):
        hub.publish("t", "x", policy="maybe")
    with pytest.raises(ValueError):
        hub.set_policy("t", "sometimes")
    with pytest.raises(TypeError):
        await hub.subscribe("not a connection", "t")
    hub.set_policy("snapshots", "skip")
    assert hub._topic_policies == {"snapshots": "skip"}
    hub.set_policy("snapshots", None)
    assert hub._topic_policies == {}


async def test_reliable_topic_closes_a_stalled_subscriber_with_1013():
    async with pubsub.Hub(max_backlog=128 * 1024) as hub:
        hub.set_policy("events", "reliable")
        members = Members(hub)
        async with websocket.serve(members.handler, "127.0.0.1", 0) as server:
            contexts = [websocket.connect(url_of(server, "/?topics=events"), max_queue=1)]
            stalled = await contexts[0].__aenter__()
            await asyncio.wait_for(members.connections.get(), TIMEOUT)
            chunk = b"e" * 16 * 1024
            sent = 0
            while hub.stats.closed == 0:
                sent += hub.publish("events", chunk)
                await asyncio.sleep(0)
            assert hub.stats.skipped == 0
            for _ in range(sent):
                assert await asyncio.wait_for(stalled.recv(), TIMEOUT) == chunk
            with pytest.raises(websocket.ConnectionClosedError) as closed:
                await asyncio.wait_for(stalled.recv(), TIMEOUT)
            assert closed.value.code == 1013
            await leave(contexts)


# ----------------------------------------------------------------------
# The Redis hub


@pytest.fixture
async def two_processes(redis_server):
    """Two hubs on one Redis, each with its own server, as two processes would be."""
    opened = []
    try:
        for _ in range(2):
            hub = pubsub.RedisHub(redis_server.url)
            await hub.__aenter__()
            opened.append(hub)
        yield opened
    finally:
        for hub in opened:
            await hub.close()


async def serve_hub(hub):
    members = Members(hub)
    context = websocket.serve(members.handler, "127.0.0.1", 0)
    server = await context.__aenter__()
    return context, server, members


async def test_redis_hub_reaches_every_process_once(two_processes):
    first, second = two_processes
    await asyncio.wait_for(asyncio.gather(first.wait_connected(), second.wait_connected()), TIMEOUT)
    opened = []
    try:
        here_context, here, here_members = await serve_hub(first)
        there_context, there, there_members = await serve_hub(second)
        opened += [here_context, there_context]
        local, (local_client,) = await joined(here, here_members, ["room"])
        remote, remote_clients = await joined(there, there_members, ["room"], count=3)
        opened[:0] = local + remote
        for index in range(50):
            first.publish("room", f"text {index}")
            second.publish("room", struct.pack("!I", index))
        for client in [local_client] + remote_clients:
            texts, binaries = [], []
            while len(texts) < 50 or len(binaries) < 50:
                message = await asyncio.wait_for(client.recv_message(), TIMEOUT)
                (texts if isinstance(message, str) else binaries).append(message)
            # Each publisher's messages in its order, once each.
            assert texts == [f"text {index}" for index in range(50)]
            assert binaries == [struct.pack("!I", index) for index in range(50)]
        assert first.stats.received == second.stats.received == 50
        assert first.stats.lost == second.stats.lost == 0
        assert second.stats.delivered == 3 * 100 and first.stats.delivered == 100
    finally:
        await leave(opened)


async def test_redis_hub_over_a_unix_socket(redis_unix_server):
    async with pubsub.RedisHub(redis_unix_server.url) as first, pubsub.RedisHub(
        redis_unix_server.url, channel_prefix="game:"
    ) as second:
        context, server, members = await serve_hub(second)
        contexts, (client,) = await joined(server, members, ["lobby"])
        await asyncio.wait_for(asyncio.gather(first.wait_connected(), second.wait_connected()), TIMEOUT)
        first_prefixed = pubsub.RedisHub(redis_unix_server.url, channel_prefix="game:")
        async with first_prefixed:
            await asyncio.wait_for(first_prefixed.wait_connected(), TIMEOUT)
            first.publish("lobby", "other prefix: not for the lobby")
            first_prefixed.publish("lobby", "hello")
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "hello"
        await leave(contexts + [context])


async def test_redis_subscriptions_end_when_connections_close(redis_server, two_processes):
    first, _ = two_processes
    context, server, members = await serve_hub(first)
    contexts, _ = await joined(server, members, ["x", "y"], count=10)
    await asyncio.wait_for(first.wait_connected(), TIMEOUT)
    assert redis_server.command("PUBSUB", "NUMSUB", "anynet:x") .endswith(b":1\r\n")
    await leave(contexts)
    for _ in contexts:
        await asyncio.wait_for(members.finished.get(), TIMEOUT)
    assert first._subscribers == {} and first._topics_of == {} and first._wanted == set()

    # Redis's side follows: the process unsubscribes from both channels.
    async def unsubscribed():
        while b"anynet:" in redis_server.command("PUBSUB", "CHANNELS"):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(unsubscribed(), TIMEOUT)
    await leave([context])


async def test_redis_killed_and_restarted_mid_stream_loss_is_counted_exactly(redis_server):
    """kill -9 Redis while one process publishes to another: local delivery goes
    on, both reconnect, and the receiver's reported loss is exactly what its
    subscriber missed. A small outgoing queue makes the outage certain to lose
    messages (dropped by the publisher), beside whatever was in flight."""
    reported = []
    publisher = pubsub.RedisHub(redis_server.url, max_outgoing=4096)
    receiver = pubsub.RedisHub(redis_server.url, on_loss=lambda topic, count: reported.append((topic, count)))
    opened = []
    async with publisher, receiver:
        here_context, here, here_members = await serve_hub(publisher)
        there_context, there, there_members = await serve_hub(receiver)
        opened += [here_context, there_context]
        local, (local_client,) = await joined(here, here_members, ["stream"])
        remote, (remote_client,) = await joined(there, there_members, ["stream"])
        opened[:0] = local + remote
        await asyncio.wait_for(asyncio.gather(publisher.wait_connected(), receiver.wait_connected()), TIMEOUT)

        published = 0

        def publish(count):
            nonlocal published
            for _ in range(count):
                publisher.publish("stream", struct.pack("!I", published))
                published += 1

        async def received_by(client, count, into):
            while len(into) < count:
                into.append(struct.unpack("!I", await client.recv())[0])

        local_got, remote_got = [], []
        publish(100)
        await asyncio.wait_for(received_by(remote_client, 100, remote_got), TIMEOUT)

        redis_server.kill()
        # While Redis is down: publishing never fails, local delivery goes on.
        for _ in range(20):
            publish(20)
            await asyncio.sleep(0.005)
        await asyncio.wait_for(received_by(local_client, published, local_got), TIMEOUT)
        assert local_got == list(range(published))
        assert not publisher.connected and not receiver.connected

        redis_server.start()
        await asyncio.wait_for(asyncio.gather(publisher.wait_connected(), receiver.wait_connected()), TIMEOUT)
        # What was queued during the outage goes out first (so that the
        # messages below find room in the small queue).
        await asyncio.wait_for(publisher.drain(), TIMEOUT)
        # After the outage, the stream flows again; the first message through
        # reveals any gap before it.
        first_after = published
        publish(100)

        async def until_after_outage():
            while not remote_got or remote_got[-1] < published - 1:
                remote_got.append(struct.unpack("!I", await remote_client.recv())[0])

        await asyncio.wait_for(until_after_outage(), TIMEOUT)
        assert remote_got[-1] == published - 1 and first_after <= published - 1

        # In order, never twice, and what is missing is what was reported.
        assert remote_got == sorted(set(remote_got))
        observed = published - len(remote_got)
        assert publisher.stats.dropped > 0
        assert observed >= publisher.stats.dropped
        assert receiver.stats.lost == observed
        assert sum(count for _, count in reported) == observed
        assert {topic for topic, _ in reported} == {"stream"}
        assert publisher.stats.reconnects >= 1 and receiver.stats.reconnects >= 1
        await leave(opened)


async def test_redis_unreachable_at_start(redis_server, tmp_path):
    redis_server.stop()
    late = RedisServer(tmp_path / "late")
    (tmp_path / "late").mkdir()
    async with pubsub.RedisHub(late.url) as hub:
        context, server, members = await serve_hub(hub)
        contexts, (client,) = await joined(server, members, ["t"])
        # Subscribing and publishing work at once, locally.
        assert hub.publish("t", "local") == 1
        assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "local"
        assert not hub.connected
        late.start()
        try:
            async with pubsub.RedisHub(late.url) as other:
                await asyncio.wait_for(asyncio.gather(hub.wait_connected(), other.wait_connected()), TIMEOUT)
                other.publish("t", "from elsewhere")
                assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "from elsewhere"
        finally:
            await leave(contexts + [context])
            late.stop()


async def test_a_publisher_faster_than_redis_holds_bounded_memory(redis_server):
    async with pubsub.RedisHub(redis_server.url, max_outgoing=64 * 1024) as publisher, pubsub.RedisHub(
        redis_server.url
    ) as receiver:
        context, server, members = await serve_hub(receiver)
        contexts, (client,) = await joined(server, members, ["fast"])
        await asyncio.wait_for(asyncio.gather(publisher.wait_connected(), receiver.wait_connected()), TIMEOUT)
        redis_server.pause()  # Redis takes nothing now
        try:
            message = b"m" * 100
            for index in range(5000):
                publisher.publish("fast", message)
                assert publisher.outgoing_bytes <= 64 * 1024
                if index % 100 == 0:
                    await asyncio.sleep(0)  # the hub tries to write meanwhile
            assert publisher.stats.dropped > 0
        finally:
            redis_server.resume()
        await asyncio.wait_for(publisher.drain(), TIMEOUT)
        dropped = publisher.stats.dropped
        publisher.publish("fast", b"last")
        got = 0
        while await asyncio.wait_for(client.recv(), TIMEOUT) != b"last":
            got += 1
        assert got == 5000 - dropped
        assert receiver.stats.lost == dropped
        await leave(contexts + [context])


async def until(condition):
    while not condition():
        await asyncio.sleep(0.001)


async def test_a_publisher_that_awaits_reliable_publishes_goes_at_redis_pace(redis_server):
    """Awaiting a reliable publish waits for room in the queue to Redis while
    it is more than half full: nothing is dropped, however far the publisher
    runs ahead, and every other process gets every message in order. Skip
    publishes never wait."""
    bound = 16 * 1024
    async with pubsub.RedisHub(redis_server.url, max_outgoing=bound) as publisher, pubsub.RedisHub(
        redis_server.url
    ) as receiver:
        context, server, members = await serve_hub(receiver)
        contexts, (client,) = await joined(server, members, ["paced"])
        await asyncio.wait_for(asyncio.gather(publisher.wait_connected(), receiver.wait_connected()), TIMEOUT)
        count = 2000  # 12 times the bound

        async def publish_all():
            for index in range(count):
                await publisher.publish("paced", struct.pack("!I", index) + b"m" * 96, policy="reliable")

        redis_server.pause()  # Redis takes nothing: the publisher must wait
        try:
            publishing = asyncio.ensure_future(publish_all())
            await asyncio.wait_for(until(lambda: publisher.outgoing_bytes > bound // 2), TIMEOUT)
            for _ in range(100):
                await asyncio.sleep(0)
            assert not publishing.done() and publisher.outgoing_bytes <= bound
            # A skip publish is not held back.
            await asyncio.wait_for(publisher.publish("elsewhere", b"s", policy="skip"), TIMEOUT)
        finally:
            redis_server.resume()
        await asyncio.wait_for(publishing, TIMEOUT)
        received = []
        for _ in range(count):
            received.append(struct.unpack("!I", (await asyncio.wait_for(client.recv(), TIMEOUT))[:4])[0])
        assert received == list(range(count))
        assert publisher.stats.dropped == 0 and receiver.stats.lost == 0
        await leave(contexts + [context])


async def test_awaiting_a_reliable_publish_never_waits_for_an_unreachable_redis(redis_server):
    """Redis down: local delivery goes on at full pace, and what does not fit
    the queue is dropped and counted, never waited for."""
    async with pubsub.RedisHub(redis_server.url, max_outgoing=4096) as hub:
        context, server, members = await serve_hub(hub)
        contexts, (client,) = await joined(server, members, ["room"])
        await asyncio.wait_for(hub.wait_connected(), TIMEOUT)
        redis_server.kill()
        await asyncio.wait_for(until(lambda: not hub.connected), TIMEOUT)
        for index in range(500):
            await asyncio.wait_for(hub.publish("room", b"%d" % index, policy="reliable"), TIMEOUT)
        for index in range(500):
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"%d" % index
        assert hub.stats.dropped > 0
        await leave(contexts + [context])


async def test_a_redis_that_stops_answering_ends_a_reliable_publishers_wait(redis_server):
    """Redis alive but silent (stopped): the wait for room lasts until the
    publishing connection counts as lost (5 s without an answer), then
    publishing goes on locally."""
    async with pubsub.RedisHub(redis_server.url, max_outgoing=4096) as hub:
        context, server, members = await serve_hub(hub)
        contexts, (client,) = await joined(server, members, ["room"])
        await asyncio.wait_for(hub.wait_connected(), TIMEOUT)
        redis_server.pause()
        try:
            for index in range(200):
                await asyncio.wait_for(hub.publish("room", b"%d" % index, policy="reliable"), TIMEOUT)
            assert not hub.connected
        finally:
            redis_server.resume()
        for index in range(200):
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"%d" % index
        await leave(contexts + [context])
