"""The hub between processes: local delivery plus Redis pub/sub (see ``RedisHub``)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import deque
from itertools import islice
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Set, Tuple, Union

from anynet._broadcast import DEFAULT_MAX_BACKLOG, BroadcastResult, DeliveryPolicy
from anynet._envelope import GapCounter, MalformedEnvelope, open_envelope, seal
from anynet._hub import Hub

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection, ConnectionPool

logger = logging.getLogger("anynet.pubsub")

# Bytes of envelopes that may wait to be written to Redis: what a publisher
# faster than Redis (or publishing while Redis is down) may hold in memory.
DEFAULT_MAX_OUTGOING = 8 * 1024 * 1024
DEFAULT_CHANNEL_PREFIX = "anynet:"
# Reconnecting: the first retry after about this many seconds, doubling up
# to the cap, each delay drawn between half and all of it (jitter, so that
# many processes do not reconnect in step).
_FIRST_RETRY_DELAY = 0.05
_MAX_RETRY_DELAY = 1.0
# Seconds a command to Redis (a batch of publishes) may take before the
# connection is considered dead; and a connection attempt.
_COMMAND_TIMEOUT = 5.0
_CONNECT_TIMEOUT = 2.0
# Publishes written to Redis per round trip.
_BATCH = 512
# Seconds close() gives queued publishes to reach a connected Redis.
_CLOSE_FLUSH_TIMEOUT = 1.0

LossCallback = Callable[[str, int], None]


class RedisHub(Hub):
    """A hub whose topics reach every process connected to the same Redis.

    ``url`` is a Redis URL: ``redis://host:port/db`` (TCP),
    ``unix:///path/to/redis.sock`` (Unix socket), or ``rediss://`` (TLS);
    ``channel_prefix`` is put before each topic to name its Redis channel.
    Each process holds two connections to Redis whatever the number of
    topics: one subscribed to the channels of the topics that have local
    subscribers, one to publish. A message from another process is encoded
    into a frame once and written to the local subscribers with the
    publisher's delivery policy, as ``broadcast`` does.

    Nothing from Redis ever reaches the application as an exception:
    ``subscribe``, ``unsubscribe`` and ``publish`` work the same whether
    Redis is up, slow or down, and local subscribers always receive what is
    published in their process at once.

    * Redis unreachable (at start, or lost later): the hub reconnects in the
      background with capped, jittered exponential backoff (from 50 ms up to
      1 s between attempts) and then subscribes again to every topic that
      has local subscribers. ``stats.reconnects`` counts the reconnections.
    * Messages lost meanwhile: Redis keeps no messages for a subscriber that
      is not connected. Every message carries its publisher's sequence number
      on its topic, so a receiving process counts exactly the messages of
      each publisher it missed when that publisher's next message on the
      topic arrives: ``stats.lost``, and ``on_loss(topic, count)`` if given
      (called from the event loop; it must not block). A message that
      arrives twice (a publisher resends a batch after a failed write)
      is delivered once (``stats.duplicates``).
    * A publisher faster than Redis drains, or publishing while Redis is
      down: the envelopes wait in a queue of at most ``max_outgoing`` bytes
      (default 8 MiB) and are sent in order once Redis takes them. When the
      queue is full, a new message is not relayed (``stats.dropped``); it
      still reaches local subscribers, and other processes count it in
      their ``lost``.
    * Backpressure for the reliable policy: awaiting the result of a
      reliable ``publish`` also waits, while the queue is more than half
      full, until Redis has taken enough of it, so a publisher that awaits
      goes at Redis's pace and none of its messages is dropped. It waits
      only while the connection to Redis is up: losing it ends the wait at
      once, and while Redis is unreachable nothing waits (messages past the
      bound are dropped and counted; local delivery goes on); a Redis that
      stops answering holds it until the connection counts as lost (next
      point). The skip policy never waits: past the bound it drops.
    * A Redis that stops answering: a batch of publishes that takes longer
      than 5 s is treated as a lost connection (and resent after the
      reconnection).

    ``close()`` (the end of ``async with``) gives queued messages up to 1 s
    to reach a connected Redis, then closes both connections.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379",
        *,
        policy: DeliveryPolicy = "skip",
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        max_outgoing: int = DEFAULT_MAX_OUTGOING,
        channel_prefix: str = DEFAULT_CHANNEL_PREFIX,
        on_loss: Optional[LossCallback] = None,
    ) -> None:
        super().__init__(policy=policy, max_backlog=max_backlog)
        try:
            from redis.asyncio import ConnectionPool
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError as error:  # pragma: no cover - the redis extra is missing
            raise ImportError(
                "RedisHub needs the redis package: pip install 'anynet[redis]'"
            ) from error
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        if max_outgoing.__class__ is not int or max_outgoing <= 0:
            raise ValueError(f"max_outgoing must be a positive int, not {max_outgoing!r}")
        if not isinstance(channel_prefix, str):
            raise TypeError(f"channel_prefix must be a str, not {type(channel_prefix).__name__}")
        if on_loss is not None and not callable(on_loss):
            raise TypeError("on_loss must be callable")
        # Retries are the hub's own (with backoff, and resubscribing); the
        # client library's would hide a lost connection from it.
        options: Dict[str, Any] = {
            # RESP2: subscription messages are plain replies to read, where
            # RESP3 would route them to the client library's push handler.
            "protocol": 2,
            "retry": Retry(NoBackoff(), 0),
            "socket_connect_timeout": _CONNECT_TIMEOUT,
        }
        if not url.startswith("unix:"):
            # A silent subscriber connection is normal: the kernel's
            # keepalive notices a Redis host that vanished.
            options["socket_keepalive"] = True
        # ValueError here, at once, for a URL the client library rejects.
        self._publisher_pool: ConnectionPool = ConnectionPool.from_url(
            url, socket_timeout=_COMMAND_TIMEOUT, **options
        )
        # A subscriber waits for messages as long as there are none.
        self._subscriber_pool: ConnectionPool = ConnectionPool.from_url(
            url, socket_timeout=None, **options
        )
        self._prefix = channel_prefix.encode("utf-8")
        self._max_outgoing = max_outgoing
        self._on_loss = on_loss
        self._id = os.urandom(8)
        self._sequences: Dict[str, int] = {}
        self._outgoing: Deque[Tuple[bytes, bytes]] = deque()
        self._outgoing_size = 0
        # Awaiting a reliable publish waits while the queue holds more than
        # this: the other half is room for publishers woken together.
        self._room_mark = max_outgoing // 2
        self._room: Optional[asyncio.Future[None]] = None
        # Messages at the head of the queue written to the current connection
        # and not yet acknowledged by Redis.
        self._written = 0
        self._outgoing_waiter: Optional[asyncio.Future[None]] = None
        self._written_waiter: Optional[asyncio.Future[None]] = None
        self._drained: Optional[asyncio.Future[None]] = None
        self._gaps = GapCounter()
        # The channels of the topics with local subscribers; those asked of
        # Redis on the current subscriber connection; those it confirmed.
        self._wanted: Set[bytes] = set()
        self._requested: Set[bytes] = set()
        self._confirmed: Set[bytes] = set()
        self._confirmation_waiters: Dict[bytes, asyncio.Future[None]] = {}
        self._wanted_changed: Optional[asyncio.Event] = None
        self._subscriber_up: Optional[asyncio.Event] = None
        self._publisher_up: Optional[asyncio.Event] = None
        self._tasks: List[asyncio.Task[None]] = []

    # ------------------------------------------------------------------
    # Life cycle

    async def start(self) -> None:
        """Start connecting to Redis in the background; returns at once."""
        if self._tasks:
            return
        self._wanted_changed = asyncio.Event()
        self._subscriber_up = asyncio.Event()
        self._publisher_up = asyncio.Event()
        self._tasks = [
            asyncio.ensure_future(self._subscriber_loop()),
            asyncio.ensure_future(self._publisher_loop()),
        ]

    async def close(self) -> None:
        await super().close()
        if self._outgoing and self._publisher_up is not None and self._publisher_up.is_set():
            try:
                await asyncio.wait_for(self.drain(), _CLOSE_FLUSH_TIMEOUT)
            except asyncio.TimeoutError:
                pass
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._publisher_up is not None:
            self._publisher_up.clear()
            self._wake_room()
        await self._publisher_pool.disconnect()
        await self._subscriber_pool.disconnect()

    async def wait_connected(self) -> None:
        """Return once both connections to Redis are up and every topic with
        local subscribers is subscribed to (waits as long as Redis is down)."""
        if not self._tasks:
            raise RuntimeError("the hub is not started: use 'async with hub'")
        assert self._subscriber_up is not None and self._publisher_up is not None
        await self._publisher_up.wait()
        while True:
            await self._subscriber_up.wait()
            if self._wanted <= self._confirmed:
                return
            await self._until_confirmed(next(iter(self._wanted - self._confirmed)))

    @property
    def connected(self) -> bool:
        """Whether both connections to Redis are up at this moment."""
        return bool(
            self._subscriber_up is not None
            and self._subscriber_up.is_set()
            and self._publisher_up is not None
            and self._publisher_up.is_set()
        )

    # ------------------------------------------------------------------
    # Subscriptions, as Redis sees them: one channel per topic with local subscribers

    def _channel(self, topic: str) -> bytes:
        return self._prefix + topic.encode("utf-8")

    def _topic_started(self, topic: str) -> None:
        self._wanted.add(self._channel(topic))
        if self._wanted_changed is not None:
            self._wanted_changed.set()

    def _topic_emptied(self, topic: str) -> None:
        channel = self._channel(topic)
        self._wanted.discard(channel)
        # Subscribed again later, the topic starts afresh: what was
        # published meanwhile was not for this process.
        self._gaps.forget(channel)
        if self._wanted_changed is not None:
            self._wanted_changed.set()

    async def _until_subscribed(self, topic: str) -> None:
        await self._until_confirmed(self._channel(topic))

    async def _until_confirmed(self, channel: bytes) -> None:
        if self._subscriber_up is None or not self._subscriber_up.is_set():
            return  # subscribed to on (re)connection
        if channel in self._confirmed or channel not in self._wanted:
            return
        waiter = self._confirmation_waiters.get(channel)
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
            self._confirmation_waiters[channel] = waiter
        # Shielded: one waiting handler's cancellation must not end the others' wait.
        await asyncio.shield(waiter)

    def _confirm(self, channel: bytes) -> None:
        self._confirmed.add(channel)
        waiter = self._confirmation_waiters.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------
    # Publishing

    def _publish(
        self,
        topic: str,
        opcode: int,
        payload: Union[bytes, bytearray, memoryview, str],
        policy: DeliveryPolicy,
    ) -> BroadcastResult:
        # Text is encoded once, for the envelope and for the local frame.
        data = payload.encode("utf-8") if isinstance(payload, str) else payload
        result = self._deliver(topic, opcode, data, policy)
        sequence = self._sequences.get(topic, 0) + 1
        # Numbered even if dropped below, so that receivers count it as lost.
        self._sequences[topic] = sequence
        reliable = policy == "reliable"
        envelope = seal(self._id, sequence, opcode, reliable, data)
        if self._outgoing_size + len(envelope) > self._max_outgoing:
            self.stats.dropped += 1
        else:
            self._outgoing.append((self._channel(topic), envelope))
            self._outgoing_size += len(envelope)
            self._wake(self._outgoing_waiter)
        if reliable and self._outgoing_size > self._room_mark:
            # Backpressure: a publisher that awaits its reliable publishes
            # goes at the pace Redis takes them, instead of filling the
            # queue and losing messages past it.
            result._then = self._until_room
        return result

    @property
    def outgoing_bytes(self) -> int:
        """Bytes of messages waiting to be written to Redis (at most ``max_outgoing``)."""
        return self._outgoing_size

    async def drain(self) -> None:
        """Wait until every message published so far has been written to Redis
        (for as long as Redis is unreachable, too: bound it with ``wait_for``)."""
        while self._outgoing:
            if self._drained is None:
                self._drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drained)

    async def _until_room(self) -> None:
        """Wait while the outgoing queue is more than half full and Redis
        takes messages. Not while the publishing connection is down: local
        delivery must not stall on Redis (and a Redis that stops answering
        fails the connection within the 5 s command timeout)."""
        up = self._publisher_up
        while self._outgoing_size > self._room_mark and up is not None and up.is_set():
            if self._room is None:
                self._room = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._room)

    def _wake_room(self) -> None:
        self._wake(self._room)
        self._room = None

    async def _publisher_loop(self) -> None:
        assert self._publisher_up is not None
        failures = 0
        while True:
            try:
                connection = await _open_connection(self._publisher_pool)
            except Exception as error:
                failures += 1
                await self._connection_failed("publisher", None, error, failures)
                continue
            if failures:
                self.stats.reconnects += 1
            self._publisher_up.set()
            failure: Optional[BaseException] = None
            try:
                await self._publish_on(connection)
            except Exception as error:
                failure = error
            self._publisher_up.clear()
            self._wake_room()
            # What Redis did not acknowledge is written again on the next
            # connection; a receiver drops what it already had.
            self._written = 0
            failures = 1
            await self._connection_failed("publisher", connection, failure, failures)

    async def _publish_on(self, connection: AbstractConnection) -> None:
        """Write the queued messages to Redis, each batch as soon as there is
        one: Redis's answers to the earlier ones are read meanwhile, so no
        message waits for a round trip. Ends only by raising, when the
        connection fails."""
        loop = asyncio.get_running_loop()
        acknowledging = asyncio.ensure_future(self._read_acknowledgements(connection))
        try:
            while True:
                if self._written == len(self._outgoing):
                    waiter = self._outgoing_waiter = loop.create_future()
                    await asyncio.wait([waiter, acknowledging], return_when=asyncio.FIRST_COMPLETED)
                    self._outgoing_waiter = None
                    if acknowledging.done():
                        acknowledging.result()  # its error
                    continue
                batch = list(islice(self._outgoing, self._written, self._written + _BATCH))
                await connection.send_packed_command(
                    connection.pack_commands(
                        [(b"PUBLISH", channel, envelope) for channel, envelope in batch]
                    ),
                    check_health=False,
                )
                self._written += len(batch)
                self._wake(self._written_waiter)
        finally:
            acknowledging.cancel()

    async def _read_acknowledgements(self, connection: AbstractConnection) -> None:
        """Take each message Redis answered off the queue, in order. A batch
        not answered within 5 s fails the connection (Redis stopped answering)."""
        loop = asyncio.get_running_loop()
        while True:
            while not self._written:
                self._written_waiter = loop.create_future()
                await self._written_waiter
            await connection.read_response()
            _, envelope = self._outgoing.popleft()
            self._written -= 1
            self._outgoing_size -= len(envelope)
            if self._room is not None and self._outgoing_size <= self._room_mark:
                self._wake_room()
            if not self._outgoing:
                self._wake(self._drained)
                self._drained = None

    @staticmethod
    def _wake(waiter: Optional[asyncio.Future[None]]) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------
    # Receiving

    async def _subscriber_loop(self) -> None:
        assert self._subscriber_up is not None and self._wanted_changed is not None
        failures = 0
        while True:
            try:
                connection = await _open_connection(self._subscriber_pool)
            except Exception as error:
                failures += 1
                await self._connection_failed("subscriber", None, error, failures)
                continue
            if failures:
                self.stats.reconnects += 1
            failures = 0
            self._requested.clear()
            self._confirmed.clear()
            self._wanted_changed.set()
            self._subscriber_up.set()
            syncing = asyncio.ensure_future(self._keep_subscriptions(connection))
            try:
                await self._read_messages(connection)
            except Exception as error:
                failures += 1
                error_to_report: Optional[BaseException] = error
            else:  # pragma: no cover - reading ends only with an error
                error_to_report = None
            finally:
                syncing.cancel()
                self._subscriber_up.clear()
                self._confirmed.clear()
                # Handlers waiting for a confirmation stop waiting: the
                # subscription is made again on reconnection.
                waiters, self._confirmation_waiters = self._confirmation_waiters, {}
                for waiter in waiters.values():
                    if not waiter.done():
                        waiter.set_result(None)
            await self._connection_failed("subscriber", connection, error_to_report, failures)

    async def _keep_subscriptions(self, connection: AbstractConnection) -> None:
        """Make Redis's subscriptions on ``connection`` follow ``_wanted``."""
        changed = self._wanted_changed
        assert changed is not None
        while True:
            await changed.wait()
            changed.clear()
            added = self._wanted - self._requested
            removed = self._requested - self._wanted
            commands: List[Tuple[Any, ...]] = []
            if added:
                commands.append((b"SUBSCRIBE", *sorted(added)))
            if removed:
                # Never without channels: that would mean all of them.
                commands.append((b"UNSUBSCRIBE", *sorted(removed)))
            if commands:
                self._requested = (self._requested | added) - removed
                await connection.send_packed_command(
                    connection.pack_commands(commands), check_health=False
                )

    async def _read_messages(self, connection: AbstractConnection) -> None:
        while True:
            response = await connection.read_response()
            if not isinstance(response, list) or len(response) != 3:
                continue
            kind, channel, data = response
            if kind == b"message":
                self._message_arrived(channel, data)
            elif kind == b"subscribe":
                self._confirm(channel)
            elif kind == b"unsubscribe":
                self._confirmed.discard(channel)

    def _message_arrived(self, channel: bytes, data: bytes) -> None:
        if channel not in self._wanted:
            return  # a topic this process left, whose UNSUBSCRIBE is on its way
        try:
            publisher, sequence, opcode, reliable, payload = open_envelope(data)
        except MalformedEnvelope:
            self.stats.malformed += 1
            return
        if publisher == self._id:
            return  # delivered locally when it was published
        missed = self._gaps.arrived(channel, publisher, sequence)
        if missed < 0:
            self.stats.duplicates += 1
            return
        stats = self.stats
        stats.received += 1
        topic = channel[len(self._prefix) :].decode("utf-8", "replace")
        if missed:
            stats.lost += missed
            if self._on_loss is not None:
                try:
                    self._on_loss(topic, missed)
                except Exception:
                    logger.exception("on_loss callback failed")
        self._deliver(topic, opcode, payload, "reliable" if reliable else "skip")

    # ------------------------------------------------------------------

    async def _connection_failed(
        self,
        role: str,
        connection: Optional[AbstractConnection],
        error: Optional[BaseException],
        failures: int,
    ) -> None:
        """Log, let go of ``connection``, and wait before the next attempt."""
        if failures == 1:
            logger.warning("Redis %s connection failed: %r; reconnecting", role, error)
        else:
            logger.debug("Redis %s connection failed again: %r", role, error)
        if connection is not None:
            await _close_connection(connection)
        delay = min(_MAX_RETRY_DELAY, _FIRST_RETRY_DELAY * 2 ** (failures - 1))
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))


async def _open_connection(pool: ConnectionPool) -> AbstractConnection:
    """A connection of its own to Redis, made from the pool's settings but
    not shared through it: a subscribed connection can do nothing else."""
    connection: AbstractConnection = pool.make_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.connect()  # type: ignore[no-untyped-call]
    except BaseException:
        await _close_connection(connection)
        raise
    return connection


async def _close_connection(connection: AbstractConnection) -> None:
    try:
        await connection.disconnect()
    except Exception:  # already broken: nothing more to release
        pass
