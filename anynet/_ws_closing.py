"""The closing handshake of one WebSocket connection (RFC 6455 section 7), without I/O.

``ClosingHandshake`` is told what happened to the connection (the
application asked to close, a Close frame or a protocol error arrived, the
closing timer fired, the transport was lost) and answers with what to do:
the Close frame to send, when to half-close, stop reading, close or abort the
transport, and when to arm the one timer that bounds the handshake. It does
no I/O and reads no clock, so that every close path can be driven in a test
with bytes and a fake clock; ``anynet._ws_protocol`` performs its actions on
the asyncio transport.

The rules are data: ``_RULES`` maps (state, event) to the next state and the
actions, in the order they are to be done. A pair missing from the table
changes nothing: a timer that fires after the handshake moved on, a second
request to close, a Close frame after a protocol error.

It is off the per-message path: the connection core only ever tests the
frame state it mirrors (``OPEN``, ``CLOSING``, ``CLOSED``).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from anynet._connection_core import CLOSED as FRAMES_CLOSED
from anynet._connection_core import CLOSING as FRAMES_CLOSING
from anynet._connection_core import OPEN as FRAMES_OPEN
from anynet._events import (
    CLOSE_ABNORMAL,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    MAX_CLOSE_REASON,
    ProtocolError,
)


# ----------------------------------------------------------------------
# States

# Frames go both ways.
OPEN = "OPEN"
# The peer broke the protocol after messages that the application has not
# read yet: those are valid, and its answers to them still go out, so the
# failure waits until they are read, or for the closing timer.
FAILURE_PENDING = "FAILURE_PENDING"
# We sent our Close and read on until the peer's arrives.
CLOSE_SENT = "CLOSE_SENT"
# We failed the connection (or went away without waiting): our Close is sent,
# and we read on without keeping anything, so that unread bytes do not make
# the kernel reset the connection before the peer has read the Close. While
# the frame boundaries are known, the reader drops every frame but the
# peer's Close, which completes the handshake as usual (a proxy in between
# then passes it on before TCP ends); once they are lost (a violation of the
# framing itself), everything is discarded until the peer ends TCP, after
# the server's half-close (RFC 6455 7.1.1, "discarding any trailing bytes").
DRAINING = "DRAINING"
# No frame goes either way any more; TCP is ending. The server closes it
# first (RFC 6455 7.1.1); a client waits for that.
ENDING = "ENDING"
# The transport is gone.
CLOSED = "CLOSED"

# What the connection core sees of each state: whether frames may be sent.
FRAME_STATES = {
    OPEN: FRAMES_OPEN,
    FAILURE_PENDING: FRAMES_OPEN,
    CLOSE_SENT: FRAMES_CLOSING,
    DRAINING: FRAMES_CLOSED,
    ENDING: FRAMES_CLOSED,
    CLOSED: FRAMES_CLOSED,
}

# ----------------------------------------------------------------------
# Events (each with a close code and reason where it has one)

CLOSE_REQUESTED = "CLOSE_REQUESTED"  # disconnect(): the closing handshake
CLOSE_RECEIVED = "CLOSE_RECEIVED"  # the peer's Close frame
FAIL = "FAIL"  # end it at once and cleanly: a protocol error, a keepalive timeout, going away
FAIL_LATER = "FAIL_LATER"  # a protocol error behind messages not read yet
FAILURE_DUE = "FAILURE_DUE"  # the application came back to read past them
FRAMES_LOST = "FRAMES_LOST"  # while draining: no frame boundary can be trusted any more
ABORT_REQUESTED = "ABORT_REQUESTED"  # close(): drop TCP, no handshake
TIMER_FIRED = "TIMER_FIRED"  # disconnect_timeout passed since the timer was armed
TRANSPORT_LOST = "TRANSPORT_LOST"

# ----------------------------------------------------------------------
# Actions, for the I/O shell to perform in order. Only SEND_CLOSE carries
# something: the frame's bytes.

SEND_CLOSE = "SEND_CLOSE"  # write our Close frame
FLUSH = "FLUSH"  # write the frames held back for batching
STOP_RECEIVING = "STOP_RECEIVING"  # no message can arrive: wake receivers, fail pings
SEEK_CLOSE = "SEEK_CLOSE"  # the reader drops all but the peer's Close (FRAMES_LOST if it cannot)
BOUND_QUEUE = "BOUND_QUEUE"  # queue at most max_queue messages (see _ws_protocol)
STOP_KEEPALIVE = "STOP_KEEPALIVE"
WAKE_SENDERS = "WAKE_SENDERS"  # senders waiting for the buffer to drain learn it is closed
RESUME_READING = "RESUME_READING"  # if paused: what ends the handshake must be read
HALF_CLOSE = "HALF_CLOSE"  # write_eof, where the transport can (TLS cannot)
CLOSE_TRANSPORT = "CLOSE_TRANSPORT"  # close once the written data is sent
ABORT_TRANSPORT = "ABORT_TRANSPORT"  # close at once, discarding unsent data
DROP_UNSENT = "DROP_UNSENT"  # forget the frames held back for batching
ARM_TIMER = "ARM_TIMER"  # call back with TIMER_FIRED after disconnect_timeout
CANCEL_TIMER = "CANCEL_TIMER"
WAKE_CLOSED_WAITERS = "WAKE_CLOSED_WAITERS"  # disconnect()/wait_closed() return
# Bookkeeping the object does itself (not given to the shell):
_SET_CODE = "_SET_CODE"  # the event's code is the connection's close code, if none is yet

# What each role does once neither side sends frames any more: the server
# closes TCP; the client leaves that to the server, within the bound, so that
# the server holds the TIME_WAIT state, which would keep a client from
# reconnecting from the same port (RFC 6455 7.1.1). Once no frame can be found in what arrives, the server
# half-closes to tell the peer to end its side. The table below writes
# _END_TCP and _HALF_CLOSE for these.
_END_TCP = "_END_TCP"
_HALF_CLOSE = "_HALF_CLOSE"
_ROLE_ACTIONS = {
    # (is_client, placeholder): actions
    (False, _END_TCP): (FLUSH, CLOSE_TRANSPORT, ARM_TIMER),
    (True, _END_TCP): (FLUSH, ARM_TIMER),
    (False, _HALF_CLOSE): (HALF_CLOSE,),
    (True, _HALF_CLOSE): (),
}
# After our Close, when failing: what is written goes (before any half-close),
# then the reader looks for the peer's answer, within the bound.
_DRAIN = (FLUSH, SEEK_CLOSE, RESUME_READING, ARM_TIMER)

_FAILING = (_SET_CODE, SEND_CLOSE, STOP_RECEIVING, STOP_KEEPALIVE, WAKE_SENDERS) + _DRAIN
_ABORTING = (_SET_CODE, STOP_RECEIVING, DROP_UNSENT, ABORT_TRANSPORT)
_LOST = (
    _SET_CODE,
    CANCEL_TIMER,
    STOP_RECEIVING,
    STOP_KEEPALIVE,
    DROP_UNSENT,
    WAKE_SENDERS,
    WAKE_CLOSED_WAITERS,
)

# (state, event): (next state, actions). Missing pairs change nothing.
_RULES: Dict[Tuple[str, str], Tuple[str, Tuple[str, ...]]] = {
    (OPEN, CLOSE_REQUESTED): (
        CLOSE_SENT,
        (SEND_CLOSE, FLUSH, STOP_KEEPALIVE, WAKE_SENDERS, BOUND_QUEUE, RESUME_READING, ARM_TIMER),
    ),
    # RFC 6455 5.5.1: answer with a Close (echoing the peer's code).
    (OPEN, CLOSE_RECEIVED): (
        ENDING,
        (_SET_CODE, SEND_CLOSE, STOP_RECEIVING, STOP_KEEPALIVE, WAKE_SENDERS, _END_TCP),
    ),
    (OPEN, FAIL): (DRAINING, _FAILING),
    (OPEN, FAIL_LATER): (FAILURE_PENDING, (ARM_TIMER,)),
    (OPEN, ABORT_REQUESTED): (ENDING, _ABORTING),
    (OPEN, TRANSPORT_LOST): (CLOSED, _LOST),
    # The pending failure, not the application's code, is what the peer is told.
    (FAILURE_PENDING, CLOSE_REQUESTED): (DRAINING, (CANCEL_TIMER,) + _FAILING),
    (FAILURE_PENDING, FAILURE_DUE): (DRAINING, (CANCEL_TIMER,) + _FAILING),
    (FAILURE_PENDING, TIMER_FIRED): (DRAINING, _FAILING),
    (FAILURE_PENDING, FAIL): (DRAINING, (CANCEL_TIMER,) + _FAILING),
    (FAILURE_PENDING, ABORT_REQUESTED): (ENDING, (CANCEL_TIMER,) + _ABORTING),
    (FAILURE_PENDING, TRANSPORT_LOST): (CLOSED, _LOST),
    # The one timer armed by CLOSE_REQUESTED bounds the rest of the handshake.
    (CLOSE_SENT, CLOSE_RECEIVED): (ENDING, (_SET_CODE, STOP_RECEIVING, _END_TCP)),
    # After our Close nothing can be answered, so nothing waits to be read:
    # a protocol error fails the connection at once.
    (CLOSE_SENT, FAIL): (DRAINING, (_SET_CODE, STOP_RECEIVING) + _DRAIN),
    (CLOSE_SENT, FAIL_LATER): (DRAINING, (_SET_CODE, STOP_RECEIVING) + _DRAIN),
    (CLOSE_SENT, TIMER_FIRED): (ENDING, (_SET_CODE, STOP_RECEIVING, ABORT_TRANSPORT)),
    (CLOSE_SENT, ABORT_REQUESTED): (ENDING, _ABORTING),
    (CLOSE_SENT, TRANSPORT_LOST): (CLOSED, _LOST),
    # The peer's answer, found among what it still sent: TCP ends as usual.
    (DRAINING, CLOSE_RECEIVED): (ENDING, (STOP_RECEIVING, _END_TCP)),
    (DRAINING, FRAMES_LOST): (DRAINING, (_HALF_CLOSE,)),
    (DRAINING, TIMER_FIRED): (ENDING, (ABORT_TRANSPORT,)),
    (DRAINING, ABORT_REQUESTED): (ENDING, _ABORTING),
    (DRAINING, TRANSPORT_LOST): (CLOSED, _LOST),
    (ENDING, TIMER_FIRED): (ENDING, (ABORT_TRANSPORT,)),
    (ENDING, ABORT_REQUESTED): (ENDING, _ABORTING),
    (ENDING, TRANSPORT_LOST): (CLOSED, _LOST),
}


def _for_role(is_client: bool) -> Dict[Tuple[str, str], Tuple[str, Tuple[str, ...]]]:
    """_RULES with the role's actions written out in place of _END_TCP and _HALF_CLOSE."""
    return {
        key: (next_state, sum((_ROLE_ACTIONS.get((is_client, s), (s,)) for s in steps), ()))
        for key, (next_state, steps) in _RULES.items()
    }


# is_client: the rules of that role.
_ROLE_RULES = {False: _for_role(False), True: _for_role(True)}

# The code and reason recorded for events that come without a Close frame.
_LOCAL_CODES = {
    ABORT_REQUESTED: (CLOSE_ABNORMAL, "the connection was closed locally"),
    TRANSPORT_LOST: (CLOSE_ABNORMAL, "the connection was lost"),
    TIMER_FIRED: (CLOSE_ABNORMAL, "the peer did not finish the closing handshake in time"),
}

Action = Tuple[str, Optional[bytes]]


class ClosingHandshake:
    """The state of one connection's closing handshake; see the module.

    ``encode_close(code, reason)`` builds a Close frame (the framing
    writer's method: the same masking as every other frame of the
    connection). Each event method returns the actions to perform, in order,
    as ``(action, frame)`` pairs, ``frame`` being the bytes of SEND_CLOSE.
    """

    __slots__ = (
        "_is_client",
        "_encode_close",
        "state",
        "close_code",
        "close_reason",
        "sent_close",
        "pending_failure",
        "timer_armed",
    )

    def __init__(
        self, is_client: bool, encode_close: Callable[[Optional[int], str], bytes]
    ) -> None:
        self._is_client = is_client
        self._encode_close = encode_close
        self.state = OPEN
        # The code and reason the connection closed with, once known.
        self.close_code: Optional[int] = None
        self.close_reason = ""
        # The code and reason of the Close frame we sent, if any.
        self.sent_close: Optional[Tuple[int, str]] = None
        # The protocol error waiting in FAILURE_PENDING.
        self.pending_failure: Optional[ProtocolError] = None
        self.timer_armed = False

    @property
    def frame_state(self) -> int:
        """The state the connection core tests: OPEN, CLOSING or CLOSED."""
        return FRAME_STATES[self.state]

    # ------------------------------------------------------------------
    # Events

    def close_requested(self, code: int = CLOSE_NORMAL, reason: str = "") -> List[Action]:
        """The application closes with ``code`` and ``reason``.

        ``ValueError`` for a code an endpoint may not send or a reason over
        123 bytes of UTF-8, raised before anything changes.
        """
        if self.state is OPEN:
            frame = self._encode_close(code, reason)
            return self._handle(CLOSE_REQUESTED, code, reason, frame)
        return self._handle_failure_or(CLOSE_REQUESTED)

    def close_received(self, code: int, reason: str) -> List[Action]:
        """The peer's Close frame (``code`` 1005 when it had no payload)."""
        # The echo: no code for a Close without one, and not the reason.
        echoed = None if code == CLOSE_NO_STATUS else code
        try:
            frame = self._encode_close(echoed, "")
        except ValueError:  # a code that may be received but not sent
            echoed, frame = CLOSE_NORMAL, self._encode_close(CLOSE_NORMAL, "")
        return self._handle(CLOSE_RECEIVED, code, reason, frame, (code, ""))

    def protocol_error(self, error: ProtocolError, messages_unread: bool) -> List[Action]:
        """The peer broke RFC 6455; ``messages_unread`` if valid messages before
        the violation wait to be read."""
        if messages_unread and self.state is OPEN:
            self.pending_failure = error
            return self._handle(FAIL_LATER, error.code, error.reason)
        if self.state is DRAINING:
            # What came after our Close was no frame: the search for the peer's Close ends.
            return self.frames_lost()
        return self.fail(error.code, error.reason)

    def fail(self, code: int, reason: str) -> List[Action]:
        """End the connection at once and cleanly with ``code``: after a protocol
        error, a keepalive timeout, a failed callback, or to go away without
        waiting (the caller does not wait, the handshake runs on its own)."""
        if self.state is FAILURE_PENDING:
            return self._handle_failure_or(FAIL)  # the peer's violation comes first
        reason = _truncate_reason(reason)
        return self._handle(FAIL, code, reason, self._encode_close(code, reason))

    def frames_lost(self) -> List[Action]:
        """While draining: the reader cannot find frames in what arrives (SEEK_CLOSE
        after a violation of the framing, or garbage where a frame should start)."""
        return self._handle(FRAMES_LOST, CLOSE_ABNORMAL, "")

    def failure_due(self) -> List[Action]:
        """The application has read the messages before a pending failure."""
        return self._handle_failure_or(FAILURE_DUE)

    def abort_requested(self) -> List[Action]:
        """The application drops TCP without a closing handshake."""
        return self._handle(ABORT_REQUESTED, *_LOCAL_CODES[ABORT_REQUESTED])

    def timer_fired(self) -> List[Action]:
        """``disconnect_timeout`` has passed since ARM_TIMER."""
        self.timer_armed = False
        return self._handle_failure_or(TIMER_FIRED)

    def transport_lost(self) -> List[Action]:
        return self._handle(TRANSPORT_LOST, *_LOCAL_CODES[TRANSPORT_LOST])

    # ------------------------------------------------------------------

    def _handle_failure_or(self, event: str) -> List[Action]:
        """``event``, or, with a failure pending, that failure's Close."""
        error = self.pending_failure
        if self.state is FAILURE_PENDING and error is not None:
            reason = _truncate_reason(error.reason)
            frame = self._encode_close(error.code, reason)
            return self._handle(event, error.code, reason, frame)
        code, reason = _LOCAL_CODES.get(event, (CLOSE_ABNORMAL, ""))
        return self._handle(event, code, reason)

    def _handle(
        self,
        event: str,
        code: int,
        reason: str,
        frame: Optional[bytes] = None,
        sent: Optional[Tuple[int, str]] = None,
    ) -> List[Action]:
        rule = _ROLE_RULES[self._is_client].get((self.state, event))
        if rule is None:
            return []
        self.state, steps = rule
        if self.state is not FAILURE_PENDING:
            self.pending_failure = None
        actions: List[Action] = []
        for step in steps:
            if step is _SET_CODE:
                if self.close_code is None:
                    self.close_code, self.close_reason = code, reason
            elif step is SEND_CLOSE:
                assert frame is not None
                self.sent_close = (code, reason) if sent is None else sent
                actions.append((SEND_CLOSE, frame))
            elif step is ARM_TIMER:
                if not self.timer_armed:
                    self.timer_armed = True
                    actions.append((ARM_TIMER, None))
            elif step is CANCEL_TIMER:
                if self.timer_armed:
                    self.timer_armed = False
                    actions.append((CANCEL_TIMER, None))
            else:
                actions.append((step, None))
        return actions


def _truncate_reason(reason: str) -> str:
    """``reason`` cut to what a Close frame holds, at a character boundary."""
    encoded = reason.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON:
        return reason
    return encoded[:MAX_CLOSE_REASON].decode("utf-8", "ignore")
