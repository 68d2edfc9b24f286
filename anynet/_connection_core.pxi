# The compiled twin of anynet/_connection_core.py (see its docstring; the
# comments there hold here too), part of anynet._speedups so that it calls
# the compiled reader and writer as C functions. The behaviour is the
# pure-Python class's; only the helpers that nothing outside the core calls
# (_receiver, _next_message, _refuse_hopeless_wait, _send_frame,
# _flush_pending, _dispatch, _deliver) are C functions.
# What compiling buys is that a read, the queueing of its messages and the
# wake-up of the task waiting for them are one C call with no Python frame,
# and that send() and recv() run no bytecode.

from asyncio import get_running_loop
from collections import deque

from anynet._connection_core import (
    LARGE_PAYLOAD_SIZE,
    OPEN,
    _flush_batch,
    _write_batch,
    current_task,
)
from anynet._events import OP_BINARY, OP_TEXT
from anynet._ws_errors import (
    ConnectionClosed,
    ConnectionClosedOK,
    MessageCallbackSet,
    MessageTypeError,
)

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

# The same objects as the pure-Python module's, compared by identity.
cdef object _OPEN = OPEN
cdef int _BINARY = OP_BINARY
cdef int _TEXT = OP_TEXT
cdef Py_ssize_t _LARGE_PAYLOAD = LARGE_PAYLOAD_SIZE


cdef Py_ssize_t _clamped(object count):
    # No queue or buffer can hold more than this anyway.
    return PY_SSIZE_T_MAX if count is None or count > PY_SSIZE_T_MAX else count


cdef class ConnectionCore:
    """The per-message state and methods of one connection (see anynet._connection_core)."""

    cdef public object _loop
    cdef public FrameReader _reader
    cdef public FrameWriter _writer
    cdef public object _transport
    cdef public bint _transport_lost
    cdef public object _state
    cdef public bint _receiving
    cdef public object _deferred_failure
    cdef public object _messages
    cdef public list _receivers
    cdef public Py_ssize_t _pause_level
    cdef public Py_ssize_t _resume_level
    cdef public bint _reading_paused
    cdef public list _pending
    cdef public Py_ssize_t _pending_size
    cdef public list _write_batch
    cdef public Py_ssize_t _write_limit
    cdef public bint _writing_paused
    cdef public object _on_message

    def __init__(self, FrameReader reader not None, FrameWriter writer not None, options):
        self._loop = get_running_loop()
        self._reader = reader
        self._writer = writer
        self._state = _OPEN
        self._receiving = True
        self._receivers = []
        max_queue = options.max_queue
        self._pause_level = _clamped(max_queue)
        self._resume_level = 0 if max_queue is None else _clamped(max_queue // 4)
        self._write_batch = _write_batch(self._loop)
        self._write_limit = _clamped(options.write_limit)

    def get_buffer(self, Py_ssize_t sizehint):
        return self._reader.get_buffer(sizehint)

    # ------------------------------------------------------------------
    # Sending

    async def send(self, data):
        """Send a binary message. Waits while the send buffer is over ``write_limit``."""
        cls = type(data)
        if cls is not bytes and not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send() takes bytes, not {cls.__name__}; use send_text() for str")
        if self._state is not _OPEN:
            raise self._closed_exception()
        if self._writing_paused:
            await self._wait_for_writing()
        if (cls is bytes or cls is bytearray) and len(data) >= _LARGE_PAYLOAD:
            self._write_large(OP_BINARY, data)
        else:
            self._send_frame(self._writer.encode(_BINARY, data, True))

    async def send_text(self, data):
        """Send a text message. Waits while the send buffer is over ``write_limit``."""
        if type(data) is not str and not isinstance(data, str):
            raise TypeError(
                f"send_text() takes str, not {type(data).__name__}; use send() for bytes"
            )
        if self._state is not _OPEN:
            raise self._closed_exception()
        if self._writing_paused:
            await self._wait_for_writing()
        self._send_frame(self._writer.encode(_TEXT, data, True))

    def send_nowait(self, data):
        """Send a binary message now, without waiting; see ``set_message_callback``."""
        cls = type(data)
        if cls is not bytes and not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"send_nowait() takes bytes, not {cls.__name__}; use send_text_nowait() for str"
            )
        if self._state is not _OPEN:
            raise self._closed_exception()
        if self._writing_paused:
            self._check_send_bound()
        if (cls is bytes or cls is bytearray) and len(data) >= _LARGE_PAYLOAD:
            self._write_large(OP_BINARY, data)
        else:
            self._send_frame(self._writer.encode(_BINARY, data, True))

    def send_text_nowait(self, data):
        """Send a text message now, without waiting; see ``set_message_callback``."""
        if type(data) is not str and not isinstance(data, str):
            raise TypeError(
                f"send_text_nowait() takes str, not {type(data).__name__}; use send_nowait() for bytes"
            )
        if self._state is not _OPEN:
            raise self._closed_exception()
        if self._writing_paused:
            self._check_send_bound()
        self._send_frame(self._writer.encode(_TEXT, data, True))

    def _write(self, bytes data):
        self._send_frame(data)

    cdef int _send_frame(self, bytes data) except -1:
        cdef list pending = self._pending
        if pending is None:
            self._transport.write(data)
            self._pending = []
            return 0
        if not pending:
            if not self._write_batch:
                self._loop.call_soon(_flush_batch, self._loop, self._write_batch)
            self._write_batch.append(self)
        pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= self._write_limit:
            self._flush_pending()
        return 0

    def _flush(self):
        self._flush_pending()

    cdef int _flush_pending(self) except -1:
        cdef list pending = self._pending
        self._pending = None
        self._pending_size = 0
        if pending and not self._transport_lost:
            if len(pending) == 1:
                self._transport.write(pending[0])
            else:
                self._transport.writelines(pending)
        return 0

    # ------------------------------------------------------------------
    # Receiving

    async def recv(self):
        """Receive the next binary message; text messages stay queued for ``recv_text``."""
        while True:
            message = self._next_message(bytes)
            if message is not None:
                return message
            if self._reading_paused:
                self._refuse_hopeless_wait(bytes)
            await self._receiver()

    async def recv_text(self):
        """Receive the next text message; binary messages stay queued for ``recv``."""
        while True:
            message = self._next_message(str)
            if message is not None:
                return message
            if self._reading_paused:
                self._refuse_hopeless_wait(str)
            await self._receiver()

    async def recv_message(self):
        """Receive the next message of either type: ``bytes`` for binary, ``str`` for text."""
        while True:
            message = self._next_message(None)
            if message is not None:
                return message
            await self._receiver()

    def __aiter__(self):
        return self

    async def __anext__(self):
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

    def buffer_updated(self, Py_ssize_t nbytes):
        cdef list events = self._reader.buffer_updated(nbytes)
        cdef list receivers
        if not events:
            return
        if self._on_message is not None:
            self._dispatch(events)
            return
        messages = self._messages
        if messages is None:
            messages = self._messages = deque()
        for event in events:
            cls = type(event)
            if cls is bytes or cls is str:
                messages.append(event)
            else:
                self._control_event(event)
        receivers = self._receivers
        if receivers:
            self._receivers = []
            _wake_tasks_now(self._loop, receivers)
        if len(messages) >= self._pause_level and not self._reading_paused:
            if self._state is _OPEN:
                self._pause_reading()

    cdef object _receiver(self):
        cdef list receivers
        if self._on_message is not None:
            raise MessageCallbackSet("messages go to the message callback, not to receive methods")
        if self._deferred_failure is not None:
            self._fail_deferred()
        if not self._receiving:
            raise self._closed_exception()
        if self._pending is not None:
            if self._pending:
                self._flush_pending()
            else:
                self._pending = None
        receivers = self._receivers
        if receivers:
            receivers[:] = [receiver for receiver in receivers if not receiver.done()]
        receiver = self._loop.create_future()
        receivers.append(receiver)
        return receiver

    cdef int _refuse_hopeless_wait(self, object kind) except -1:
        if self._receiving and self._deferred_failure is None and self._messages:
            raise MessageTypeError(kind, len(self._messages))
        return 0

    cdef object _next_message(self, object kind):
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

    def set_message_callback(self, callback):
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
        receivers, self._receivers = self._receivers, []
        for receiver in receivers:
            if not receiver.done():
                receiver.set_result(None)
        if self._reading_paused and not self._writing_paused:
            self._resume_reading()
        elif self._writing_paused and not self._reading_paused and self._state is _OPEN:
            self._pause_reading()

    cdef int _dispatch(self, list events) except -1:
        cdef list receivers
        for event in events:
            cls = type(event)
            if cls is bytes or cls is str:
                callback = self._on_message
                if callback is not None:
                    if not self._deliver(callback, event):
                        return 0
                    continue
                if self._messages is None:
                    self._messages = deque()
                self._messages.append(event)
            else:
                self._control_event(event)
        if self._pending is not None:
            if self._pending:
                self._flush_pending()
            else:
                self._pending = None
        receivers = self._receivers
        if receivers and self._messages:
            self._receivers = []
            _wake_tasks_now(self._loop, receivers)
        return 0

    cdef bint _deliver(self, object callback, object message) except -1:
        try:
            callback(message)
        except ConnectionClosed:
            return False
        except Exception as error:
            self._callback_failed(error)
            return False
        return True

    def _pause_reading(self):
        cdef list receivers
        self._reading_paused = True
        self._transport.pause_reading()
        receivers = self._receivers
        if receivers:
            self._receivers = []
            _wake_tasks_now(self._loop, receivers)

    def _resume_reading(self):
        self._reading_paused = False
        if not self._transport_lost:
            self._transport.resume_reading()

    def _resume_reading_if_drained(self):
        if self._messages is None or len(self._messages) <= self._resume_level:
            self._resume_reading()


def wake_tasks_now(loop, list waiters not None):
    """Complete ``waiters`` and run the task waiting on each one here and now
    (see anynet._connection_core.wake_tasks_now)."""
    _wake_tasks_now(loop, waiters)


cdef int _wake_tasks_now(object loop, list waiters) except -1:
    cdef bint eager = current_task(loop) is None
    for waiter in waiters:
        callbacks = getattr(waiter, "_callbacks", None) if eager else None
        if callbacks and len(callbacks) == 1:
            wakeup, context = callbacks[0]
            waiter.remove_done_callback(wakeup)
            waiter.set_result(None)
            context.run(wakeup, waiter)
        elif not waiter.done():
            waiter.set_result(None)
    return 0
