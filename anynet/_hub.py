"""The in-process hub, and what every hub shares (see ``anynet.pubsub``)."""

from __future__ import annotations

from typing import Any, Dict, FrozenSet, Optional, Set, Union

from anynet._broadcast import (
    DEFAULT_MAX_BACKLOG,
    POLICIES,
    BroadcastResult,
    DeliveryPolicy,
    send_frames,
)
from anynet._events import OP_BINARY, OP_TEXT
from anynet._ws_protocol import WebSocketClient


class HubStats:
    """Counters of a hub since it was made; each only grows.

    ``published``: messages published in this process. ``delivered``:
    frames written to local subscribers (one per subscriber per message).
    ``skipped``: deliveries left out by the skip policy (the subscriber was
    over ``write_limit``). ``closed``: subscribers closed with 1013 by the
    reliable policy. The Redis hub adds: ``received``, messages from other
    processes; ``lost``, messages from other processes that never arrived
    (counted from the gaps in their sequence numbers); ``dropped``, messages
    published here that were not relayed to Redis because its outgoing
    queue was full (other processes count them in ``lost`` too);
    ``duplicates``, messages from other processes that arrived twice and were
    delivered once; ``malformed``, messages on a hub channel that no hub
    published; ``reconnects``, connections to Redis made again after a
    failure.
    """

    __slots__ = (
        "published",
        "delivered",
        "skipped",
        "closed",
        "received",
        "lost",
        "dropped",
        "duplicates",
        "malformed",
        "reconnects",
    )

    def __init__(self) -> None:
        self.published = 0
        self.delivered = 0
        self.skipped = 0
        self.closed = 0
        self.received = 0
        self.lost = 0
        self.dropped = 0
        self.duplicates = 0
        self.malformed = 0
        self.reconnects = 0

    def as_dict(self) -> Dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={value}" for name, value in self.as_dict().items())
        return f"HubStats({counts})"


class Hub:
    """The in-process hub: topics whose subscribers are connections of this process.

    ``policy`` is the delivery policy of every topic without one of its own
    (see ``set_policy``); ``max_backlog`` the reliable policy's bound in
    bytes. Usable as ``async with hub:`` like every hub; this one needs no
    starting, and leaving the block ends every subscription.
    """

    def __init__(
        self, *, policy: DeliveryPolicy = "skip", max_backlog: int = DEFAULT_MAX_BACKLOG
    ) -> None:
        _check_policy(policy)
        if max_backlog.__class__ is not int or max_backlog <= 0:
            raise ValueError(f"max_backlog must be a positive int, not {max_backlog!r}")
        self._policy = policy
        self._max_backlog = max_backlog
        self._topic_policies: Dict[str, DeliveryPolicy] = {}
        self._subscribers: Dict[str, Set[WebSocketClient]] = {}
        # Every connection that ever subscribed, until it closes: its topics
        # now, possibly none.
        self._topics_of: Dict[WebSocketClient, Set[str]] = {}
        self.stats = HubStats()

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the hub (``async with`` does); nothing to do in-process."""

    async def close(self) -> None:
        """End every subscription; ``async with`` calls it on the way out."""
        for topic in list(self._subscribers):
            self._topic_emptied(topic)
        self._subscribers.clear()
        for topics in self._topics_of.values():
            topics.clear()

    async def wait_connected(self) -> None:
        """Return once messages reach other processes; at once in-process."""

    async def drain(self) -> None:
        """Wait until every message published so far has left this process;
        at once in-process."""

    # ------------------------------------------------------------------
    # Subscriptions

    async def subscribe(self, client: WebSocketClient, topic: str) -> None:
        """Subscribe ``client`` to ``topic`` (nothing happens if it already is).

        The subscription ends with ``unsubscribe`` or when the connection
        closes. A closed connection is not subscribed. Returns once messages
        published on ``topic`` anywhere reach ``client`` (for the Redis hub:
        once Redis confirmed the process's subscription to the topic, or at
        once while Redis is unreachable).
        """
        _check_topic(topic)
        if not isinstance(client, WebSocketClient):
            raise TypeError(f"subscribe() takes a WebSocketClient, not {type(client).__name__}")
        if not client._is_open():
            return
        topics = self._topics_of.get(client)
        if topics is None:
            topics = self._topics_of[client] = set()
            client._call_when_closed(lambda: self._connection_closed(client))
        topics.add(topic)
        subscribers = self._subscribers.get(topic)
        if subscribers is None:
            subscribers = self._subscribers[topic] = set()
            self._topic_started(topic)
        subscribers.add(client)
        await self._until_subscribed(topic)

    def unsubscribe(self, client: WebSocketClient, topic: str) -> None:
        """End ``client``'s subscription to ``topic`` (nothing happens if there is none)."""
        _check_topic(topic)
        topics = self._topics_of.get(client)
        if topics is not None:
            topics.discard(topic)
        subscribers = self._subscribers.get(topic)
        if subscribers is not None:
            subscribers.discard(client)
            if not subscribers:
                del self._subscribers[topic]
                self._topic_emptied(topic)

    def topics(self, client: WebSocketClient) -> FrozenSet[str]:
        """The topics ``client`` is subscribed to."""
        return frozenset(self._topics_of.get(client, ()))

    def subscribers(self, topic: str) -> FrozenSet[WebSocketClient]:
        """The connections of this process subscribed to ``topic``."""
        return frozenset(self._subscribers.get(topic, ()))

    def set_policy(self, topic: str, policy: Optional[DeliveryPolicy]) -> None:
        """Give ``topic`` its own delivery policy; ``None`` returns it to the hub's."""
        _check_topic(topic)
        if policy is None:
            self._topic_policies.pop(topic, None)
        else:
            _check_policy(policy)
            self._topic_policies[topic] = policy

    def _connection_closed(self, client: WebSocketClient) -> None:
        for topic in self._topics_of.pop(client, ()):
            self.unsubscribe(client, topic)

    # ------------------------------------------------------------------
    # Publishing

    def publish(
        self,
        topic: str,
        message: Union[bytes, str],
        *,
        policy: Optional[DeliveryPolicy] = None,
    ) -> BroadcastResult:
        """Send ``message`` to every subscriber of ``topic``; never waits.

        ``message`` is binary for ``bytes``, ``bytearray`` or ``memoryview``,
        text for ``str``. ``policy`` overrides the topic's for this message,
        here and in every process it reaches. Returns the local delivery's
        ``BroadcastResult`` (awaiting it waits for local subscribers' buffers,
        as for ``broadcast``; with the reliable policy on the Redis hub, also
        for room in the queue to Redis).
        """
        _check_topic(topic)
        if isinstance(message, str):
            opcode = OP_TEXT
            payload: Union[bytes, bytearray, memoryview, str] = message
        elif isinstance(message, (bytes, bytearray, memoryview)):
            opcode = OP_BINARY
            payload = message
        else:
            raise TypeError(f"publish() takes bytes or str, not {type(message).__name__}")
        if policy is None:
            policy = self._topic_policies.get(topic, self._policy)
        else:
            _check_policy(policy)
        self.stats.published += 1
        return self._publish(topic, opcode, payload, policy)

    def _publish(
        self,
        topic: str,
        opcode: int,
        payload: Union[bytes, bytearray, memoryview, str],
        policy: DeliveryPolicy,
    ) -> BroadcastResult:
        return self._deliver(topic, opcode, payload, policy)

    def _deliver(
        self,
        topic: str,
        opcode: int,
        payload: Union[bytes, bytearray, memoryview, str],
        policy: DeliveryPolicy,
    ) -> BroadcastResult:
        """Write one frame to the local subscribers of ``topic``."""
        subscribers = self._subscribers.get(topic)
        # A snapshot: a reliable delivery's result keeps it for awaiting.
        clients = () if subscribers is None else tuple(subscribers)
        result = send_frames(clients, opcode, payload, policy == "reliable", self._max_backlog)
        stats = self.stats
        stats.delivered += result.sent
        if result.skipped:
            stats.skipped += len(result.skipped)
        if result.closed:
            stats.closed += len(result.closed)
        return result

    # ------------------------------------------------------------------
    # What a hub between processes adds

    def _topic_started(self, topic: str) -> None:
        """The first subscriber of ``topic`` in this process came."""

    def _topic_emptied(self, topic: str) -> None:
        """The last subscriber of ``topic`` in this process left."""

    async def _until_subscribed(self, topic: str) -> None:
        """Wait until messages published on ``topic`` elsewhere reach this process."""


def _check_topic(topic: Any) -> None:
    if not isinstance(topic, str):
        raise TypeError(f"a topic is a str, not {type(topic).__name__}")
    if not topic:
        raise ValueError("a topic must not be empty")


def _check_policy(policy: Any) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be 'skip' or 'reliable', not {policy!r}")

