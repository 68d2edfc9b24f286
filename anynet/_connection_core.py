"""What every message of a WebSocket connection passes through.

``ConnectionCore`` is the base class of ``anynet._ws_protocol.WebSocketClient``:
the transport's read callback, the send and receive coroutines, and the
write batching. One source for both builds: when the extension is built,
Cython compiles this file as ``anynet._connection_core_c`` with the C types
of ``_connection_core_c.pxd``, which cimports the compiled framing, so that
a read, the queueing of its messages and the wake-up of the task waiting for
them are one C call with no Python frame, and send() and recv() run no
bytecode; otherwise it runs as it is. ``anynet._backend`` chooses, and every
WebSocket test runs on both builds. The helpers that nothing outside the
core calls (``_receiver``, ``_next_message``, ``_refuse_hopeless_wait``,
``_dispatch``, ``_deliver``) are C functions in the compiled build.

Everything off the per-message path (control frames, closing, pings,
keepalive, large frames) is the subclass's, and the core calls it through
the methods declared under ``TYPE_CHECKING`` below.
"""

from __future__ import annotations

import asyncio
import sys
import types
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, List, Optional, Union

from anynet._events import OP_BINARY, OP_TEXT
from anynet._ws_errors import (
    ConnectionClosed,
    ConnectionClosedOK,
    MessageCallbackSet,
    MessageTypeError,
)

if TYPE_CHECKING:
    from anynet import _cython_shim as cython
    from anynet import _framing
    from anynet._deflate import Deflater
    from anynet._events import ProtocolError
    from anynet._ws_options import ConnectionOptions
else:
    try:
        import cython
    except ImportError:  # Cython builds the extension; running never needs it.
        from anynet import _cython_shim as cython

Message = Union[bytes, str]
MessageCallback = Callable[[Message], object]

# Connection states (see anynet._ws_protocol).
OPEN = 1
CLOSING = 2
CLOSED = 3

# Payloads from this size on are sent without a new frame-sized bytes object
# (see WebSocketClient._write_large).
LARGE_PAYLOAD_SIZE = 64 * 1024

# What _pending holds once a frame went out directly and none is held back:
# one empty list for every connection, rather than a new one per message.
# Nothing is ever added to it.
_NOTHING_HELD: List[bytes] = []


def _clamped(count: Optional[int]) -> int:
    """A limit of at most sys.maxsize (None: no limit): no queue or buffer
    can hold more anyway, and the compiled build keeps it in a Py_ssize_t."""
    return sys.maxsize if count is None or count > sys.maxsize else count


class ConnectionCore:
    """The per-message state and methods of one connection (see the module)."""

    __slots__ = (
        "_loop",
        "_reader",
        "get_buffer",
        "_writer",
        "_deflater",
        "_compress_min",
        "_transport",
        "_transport_lost",
        "_state",
        "_receiving",
        "_deferred_failure",
        "_messages",
        "_receivers",
        "_pause_level",
        "_resume_level",
        "_reading_paused",
        "_pending",
        "_pending_size",
        "_write_batch",
        "_write_limit",
        "_writing_paused",
        "_on_message",
    )

    if not cython.compiled and TYPE_CHECKING:
        # Provided by the subclass, for what is rare. Declared for the type
        # checker only: Cython would compile a TYPE_CHECKING block into the
        # class, so the compiled build is told to leave it out.
        def _control_event(self, event: Any) -> None: ...
        def _closed_exception(self) -> ConnectionClosed: ...
        def _fail_deferred(self) -> None: ...
        async def _wait_for_writing(self) -> None: ...
        def _check_send_bound(self) -> None: ...
        def _callback_failed(self, error: Exception) -> None: ...
        def _write_large(self, opcode: int, payload: Union[bytes, bytearray]) -> None: ...

    def __init__(
        self,
        reader: _framing.FrameReader,
        writer: _framing.FrameWriter,
        options: ConnectionOptions,
        deflater: Optional[Deflater] = None,
        compress_min: int = 0,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader = reader
        # asyncio.BufferedProtocol.get_buffer is the reader's own: it lends
        # the loop's read buffer, or its own while a frame is incomplete, so a
        # complete frame is parsed where the socket put it, and an idle
        # connection holds no buffer. Bound here rather than
        # called from a method, it costs no Python frame per read.
        self.get_buffer = reader.get_buffer
        self._writer = writer
        # permessage-deflate, when negotiated: messages from _compress_min
        # bytes (characters) on are compressed.
        self._deflater = deflater
        self._compress_min = sys.maxsize if deflater is None else compress_min
        self._transport: Optional[asyncio.Transport] = None
        self._transport_lost = False
        self._state = OPEN
        self._receiving = True
        self._deferred_failure: Optional[ProtocolError] = None
        # Created with the first message: an idle connection has none.
        self._messages: Optional[Deque[Message]] = None
        self._receivers: List[asyncio.Future[None]] = []
        max_queue = options.max_queue
        self._pause_level = _clamped(max_queue)
        self._resume_level = 0 if max_queue is None else _clamped(max_queue // 4)
        self._reading_paused = False
        self._pending: Optional[List[bytes]] = None
        self._pending_size = 0
        self._write_batch = _write_batch(self._loop)
        self._write_limit = _clamped(options.write_limit)
        self._writing_paused = False
        # Set by set_message_callback: messages go to it instead of the queue.
        self._on_message: Optional[MessageCallback] = None

    # ------------------------------------------------------------------
    # Sending

    async def send(self, data: bytes, *, compress: bool = True) -> None:
        """Send a binary message. Waits while the send buffer is over ``write_limit``.

        With permessage-deflate negotiated, ``compress=False`` sends this one
        message uncompressed (e.g. data that is compressed already).
        """
        # The argument first: a wrong type is our user's bug, open or not.
        cls: type = type(data)
        if cls is not bytes and not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send() takes bytes, not {cls.__name__}; use send_text() for str")
        if self._state is not OPEN:
            raise self._closed_exception()
        if self._writing_paused:
            await self._wait_for_writing()
        if len(data) >= self._compress_min and compress:
            self._write(self._compressed_frame(OP_BINARY, data))
        elif (cls is bytes or cls is bytearray) and len(data) >= LARGE_PAYLOAD_SIZE:
            self._write_large(OP_BINARY, data)
        else:
            self._write(self._writer.encode(OP_BINARY, data))

    async def send_text(self, data: str, *, compress: bool = True) -> None:
        """Send a text message. Waits while the send buffer is over ``write_limit``.

        ``compress`` as for ``send``.
        """
        if type(data) is not str and not isinstance(data, str):
            raise TypeError(
                f"send_text() takes str, not {type(data).__name__}; use send() for bytes"
            )
        if self._state is not OPEN:
            raise self._closed_exception()
        if self._writing_paused:
            await self._wait_for_writing()
        if len(data) >= self._compress_min and compress:
            self._write(self._compressed_frame(OP_TEXT, data))
        else:
            self._write(self._writer.encode(OP_TEXT, data))

    def _compressed_frame(self, opcode: int, data: Union[bytes, bytearray, memoryview, str]) -> bytes:
        deflater = self._deflater
        assert deflater is not None
        compressed = deflater.compress(data)
        if len(compressed) >= len(data) and deflater.no_context_takeover:
            # Incompressible: sent as it is. (A compressor that keeps its
            # context cannot drop what it compressed: the peer's must follow.)
            return self._writer.encode(opcode, data)
        return self._writer.encode(opcode, compressed, True, True)

    def send_nowait(self, data: bytes, *, compress: bool = True) -> None:
        """Send a binary message now, without waiting; see ``set_message_callback``."""
        cls: type = type(data)
        if cls is not bytes and not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"send_nowait() takes bytes, not {cls.__name__}; use send_text_nowait() for str"
            )
        if self._state is not OPEN:
            raise self._closed_exception()
        if self._writing_paused:
            self._check_send_bound()
        if len(data) >= self._compress_min and compress:
            self._write(self._compressed_frame(OP_BINARY, data))
        elif (cls is bytes or cls is bytearray) and len(data) >= LARGE_PAYLOAD_SIZE:
            self._write_large(OP_BINARY, data)
        else:
            self._write(self._writer.encode(OP_BINARY, data))

    def send_text_nowait(self, data: str, *, compress: bool = True) -> None:
        """Send a text message now, without waiting; see ``set_message_callback``."""
        if type(data) is not str and not isinstance(data, str):
            raise TypeError(
                f"send_text_nowait() takes str, not {type(data).__name__}; use send_nowait() for bytes"
            )
        if self._state is not OPEN:
            raise self._closed_exception()
        if self._writing_paused:
            self._check_send_bound()
        if len(data) >= self._compress_min and compress:
            self._write(self._compressed_frame(OP_TEXT, data))
        else:
            self._write(self._writer.encode(OP_TEXT, data))

    def _write(self, data: bytes) -> None:
        pending = self._pending
        if pending is None:
            # The first frame since the last flush goes out at once, so a
            # lone message waits for nothing. The frames that follow it are
            # collected and written together by _flush, which runs when the
            # application waits for a message, or else at the next loop turn.
            # Only a frame that was held back costs that callback: in
            # ping-pong traffic no frame ever is.
            assert self._transport is not None
            self._transport.write(data)
            self._pending = _NOTHING_HELD
            return
        if pending is _NOTHING_HELD:
            batch = self._write_batch
            if not batch:
                self._loop.call_soon(_flush_batch, self._loop, batch)
            batch.append(self)
            self._pending = [data]
        else:
            pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= self._write_limit:
            self._flush()

    def _flush(self) -> None:
        pending = self._pending
        self._pending = None
        self._pending_size = 0
        if pending and not self._transport_lost:
            assert self._transport is not None
            if len(pending) == 1:
                self._transport.write(pending[0])
            else:
                self._transport.writelines(pending)

    # ------------------------------------------------------------------
    # Receiving

    async def recv(self) -> bytes:
        """Receive the next binary message; text messages stay queued for ``recv_text``."""
        while True:
            message = self._next_message(bytes)
            if message is not None:
                return message  # type: ignore[return-value]  # of the class asked for
            if self._reading_paused:
                self._refuse_hopeless_wait(bytes)
            await self._receiver()

    async def recv_text(self) -> str:
        """Receive the next text message; binary messages stay queued for ``recv``."""
        while True:
            message = self._next_message(str)
            if message is not None:
                return message  # type: ignore[return-value]  # of the class asked for
            if self._reading_paused:
                self._refuse_hopeless_wait(str)
            await self._receiver()

    async def recv_message(self) -> Message:
        """Receive the next message of either type: ``bytes`` for binary, ``str`` for text."""
        while True:
            message = self._next_message(None)
            if message is not None:
                return message
            await self._receiver()

    def __aiter__(self) -> ConnectionCore:
        return self

    async def __anext__(self) -> Message:
        """The next message of either type; iteration ends when the connection closes normally.

        An abnormal close (an error code, a protocol violation, a lost
        connection) raises ``ConnectionClosedError`` instead.
        """
        while True:
            message = self._next_message(None)
            if message is not None:
                return message
            try:
                await self._receiver()
            except ConnectionClosedOK:
                raise StopAsyncIteration from None

    def buffer_updated(self, nbytes: int) -> None:
        # Typed loosely: the class checks below sort the events faster than
        # isinstance would, and mypy does not follow them.
        events: List[Any] = self._reader.buffer_updated(nbytes)
        if not events:
            return
        if self._on_message is not None:
            self._dispatch(events)
            return
        messages = self._messages
        if messages is None:
            messages = self._messages = deque()
        append = messages.append
        for event in events:
            cls = type(event)
            if cls is bytes or cls is str:
                append(event)
            else:
                self._control_event(event)
        receivers = self._receivers
        if receivers:
            # A new list: the tasks woken may wait again before this returns.
            self._receivers = []
            wake_tasks_now(self._loop, receivers)
        if len(messages) >= self._pause_level and not self._reading_paused:
            if self._state is OPEN:
                self._pause_reading()

    def _receiver(self) -> asyncio.Future[None]:
        """The slow path of the receive methods: a future that the next queued
        message, or the end of receiving, completes.

        The receive methods await it themselves, without a coroutine of their
        own: a connection waiting for its next message holds one frame less,
        and each wait costs one coroutine less.
        """
        if self._on_message is not None:
            raise MessageCallbackSet("messages go to the message callback, not to receive methods")
        if self._deferred_failure is not None:
            self._fail_deferred()
        if not self._receiving:
            raise self._closed_exception()
        pending = self._pending
        if pending is not None:
            # About to wait: what this turn sent goes now, and the next
            # send, an answer to what arrives, goes out directly.
            if pending:
                self._flush()
            else:
                self._pending = None
        receivers = self._receivers
        if receivers:
            # A cancelled wait leaves its future here (done): drop those.
            receivers[:] = [receiver for receiver in receivers if not receiver.done()]
        receiver: asyncio.Future[None] = self._loop.create_future()
        receivers.append(receiver)
        return receiver

    def _refuse_hopeless_wait(self, kind: type) -> None:
        """Raise ``MessageTypeError`` for a receive of class ``kind`` that
        finds none queued while reading is paused: the queue is full of the
        other type, so nothing it waits for can arrive. A connection that is
        closing or closed is left to ``_receiver`` to report."""
        if self._receiving and self._deferred_failure is None and self._messages:
            raise MessageTypeError(kind, len(self._messages))

    def _next_message(self, kind: Optional[type]) -> Optional[Message]:
        """Take the first queued message of class ``kind`` (of either with
        None), passing over messages of the other; None if there is none."""
        messages = self._messages
        if not messages:
            return None
        message = messages[0]
        if kind is None or type(message) is kind:
            messages.popleft()
        else:
            for index, message in enumerate(messages):
                if type(message) is kind:
                    del messages[index]
                    break
            else:
                return None
        if self._reading_paused:
            self._resume_reading_if_drained()
        return message

    # ------------------------------------------------------------------
    # Receiving by callback

    def set_message_callback(self, callback: Optional[MessageCallback]) -> None:
        """Deliver every message to ``callback(message)`` as it arrives; None returns to the queue.

        ``callback`` is called from the read path, without a task switch,
        with ``bytes`` for a binary message and ``str`` for a text message;
        it answers with ``send_nowait``/``send_text_nowait``. Messages already
        queued go to it first, in order. While it is set, the receive methods
        raise ``MessageCallbackSet``, and reading pauses while the send buffer
        is over ``write_limit``. An exception from ``callback`` fails the
        connection with code 1011 and is logged.
        """
        if callback is not None and not callable(callback):
            raise TypeError(f"the message callback must be callable, not {type(callback).__name__}")
        self._on_message = callback
        if callback is None:
            if self._reading_paused:
                self._resume_reading_if_drained()
            return
        messages = self._messages
        while messages and self._on_message is callback:
            if not self._deliver(callback, messages.popleft()):
                return
        # Tasks waiting in a receive method learn that messages go elsewhere now.
        receivers, self._receivers = self._receivers, []
        for receiver in receivers:
            if not receiver.done():
                receiver.set_result(None)
        if self._reading_paused and not self._writing_paused:
            self._resume_reading()
        elif self._writing_paused and not self._reading_paused and self._state is OPEN:
            self._pause_reading()

    def _dispatch(self, events: List[Any]) -> None:
        """What buffer_updated does while a message callback is set."""
        for event in events:
            cls = type(event)
            if cls is bytes or cls is str:
                callback = self._on_message
                if callback is not None:
                    if not self._deliver(callback, event):
                        return
                    continue
                # The callback was unset by itself: the rest is queued.
                if self._messages is None:
                    self._messages = deque()
                self._messages.append(event)
            else:
                self._control_event(event)
        # As in _receiver: the answers to this read go now, the next one at once.
        pending = self._pending
        if pending is not None:
            if pending:
                self._flush()
            else:
                self._pending = None
        receivers = self._receivers
        if receivers and self._messages:
            self._receivers = []
            wake_tasks_now(self._loop, receivers)

    def _deliver(self, callback: MessageCallback, message: Message) -> bool:
        """Call ``callback`` with ``message``; False once the connection has failed."""
        try:
            callback(message)
        except ConnectionClosed:
            return False  # an answer to a closed connection: nothing is left to do
        except Exception as error:
            self._callback_failed(error)
            return False
        return True

    def _pause_reading(self) -> None:
        assert self._transport is not None
        self._reading_paused = True
        self._transport.pause_reading()
        # A receive waiting for the other type than the queue holds now waits
        # for nothing: wake it, so that it says so (_refuse_hopeless_wait).
        receivers = self._receivers
        if receivers:
            self._receivers = []
            wake_tasks_now(self._loop, receivers)

    def _resume_reading(self) -> None:
        assert self._transport is not None
        self._reading_paused = False
        if not self._transport_lost:
            self._transport.resume_reading()

    def _resume_reading_if_drained(self) -> None:
        if self._messages is None or len(self._messages) <= self._resume_level:
            self._resume_reading()


# Per event loop, the connections that held frames back during the current
# loop turn. One callback per turn writes what each of them collected, rather
# than one callback per connection: a server answering many connections in one
# turn schedules one, not hundreds.
_write_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, List[Any]] = (
    weakref.WeakKeyDictionary()
)


def _write_batch(loop: asyncio.AbstractEventLoop) -> List[Any]:
    batch = _write_batches.get(loop)
    if batch is None:
        batch = _write_batches[loop] = []
    return batch


def _flush_batch(loop: asyncio.AbstractEventLoop, batch: List[Any]) -> None:
    for connection in batch:
        try:
            connection._flush()
        except Exception as error:
            # One connection's failure must not keep the others' frames.
            loop.call_exception_handler(
                {"message": "failed to write WebSocket frames", "exception": error}
            )
    batch.clear()


def _current_task_lookup() -> Callable[[asyncio.AbstractEventLoop], Optional[asyncio.Task[Any]]]:
    """``asyncio.current_task``, or, where that is a Python function around the
    dict of current tasks that asyncio's C module keeps (Python 3.11 and
    earlier), that dict's ``get``: what the function does, without a Python
    frame for each message."""
    current_tasks = getattr(asyncio.tasks, "_current_tasks", None)
    if isinstance(asyncio.current_task, types.FunctionType) and isinstance(current_tasks, dict):
        return current_tasks.get
    return asyncio.current_task


current_task = _current_task_lookup()


def wake_tasks_now(loop: asyncio.AbstractEventLoop, waiters: List[asyncio.Future[None]]) -> None:
    """Complete ``waiters`` and run the task waiting on each one here and now.

    Completing a future only schedules its task for the next loop iteration,
    and in ping-pong traffic that iteration (a poll of the selector and, on
    the standard loop, a pass through its Python code) costs about as much
    as the message itself. So, from a plain callback (the transport's read
    callback), the task's wake-up callback is called at once, in the task's
    own context, the way Python 3.12's eager tasks take their first step.
    Inside a running task, or with a future that does not expose its
    callbacks, the future completes the ordinary way.
    """
    eager = current_task(loop) is None
    for waiter in waiters:
        # The (callback, context) pairs of asyncio's futures, both the C
        # and the Python implementation; the one callback of a future that
        # a task awaits is that task's wake-up. A future that is done (its
        # wait was cancelled) has none left.
        callbacks = getattr(waiter, "_callbacks", None) if eager else None
        if callbacks and len(callbacks) == 1:
            wakeup, context = callbacks[0]
            waiter.remove_done_callback(wakeup)
            waiter.set_result(None)
            context.run(wakeup, waiter)
        elif not waiter.done():
            waiter.set_result(None)
