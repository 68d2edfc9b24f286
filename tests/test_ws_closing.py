"""Every close path of the closing handshake's rules, with bytes and a fake clock.

``anynet._ws_closing.ClosingHandshake`` does no I/O: these tests feed it the
peer's bytes through a frame reader, advance a clock of their own, and check
the frames it sends (decoded by a reader on the peer's side) and the actions
it asks of the transport, in order. No sockets.
"""

from __future__ import annotations

import struct

import pytest

from anynet import _ws_closing as rules
from anynet._connection_core import CLOSED, CLOSING, OPEN
from anynet._events import Close, ProtocolError
from rawpeer import masked_frame

TIMEOUT = 5.0

# What either side asks once it has failed a connection: send what is
# written, then read on, dropping all but the peer's Close, within the bound.
DRAIN = [rules.FLUSH, rules.SEEK_CLOSE, rules.RESUME_READING, rules.ARM_TIMER]
# The same where no frame can be found any more: a server half-closes (a
# client leaves the first TCP close to the server).
SERVER_DRAIN_LOST = [rules.FLUSH, rules.SEEK_CLOSE, rules.HALF_CLOSE, rules.RESUME_READING, rules.ARM_TIMER]


class Connection:
    """One side of a connection as the asyncio shell would drive the rules:
    the framing of both sides, a fake clock, and a record of every action."""

    def __init__(self, framing, is_client=False):
        self.is_client = is_client
        self.rules = rules.ClosingHandshake(is_client, framing.FrameWriter(is_client).encode_close)
        self.reader = framing.FrameReader(is_client)  # what the peer sends
        self.framing = framing
        self.now = 0.0
        self.deadline = None
        self.actions = []
        self.sent = b""
        self.messages = []

    def do(self, actions):
        """Perform ``actions``; return the names of all performed, in order."""
        names = []
        found = []
        for name, frame in actions:
            names.append(name)
            self.actions.append(name)
            if name == rules.SEND_CLOSE:
                self.sent += frame
            elif name == rules.ARM_TIMER:
                assert self.deadline is None, "the timer is armed once"
                self.deadline = self.now + TIMEOUT
            elif name == rules.CANCEL_TIMER:
                self.deadline = None
            elif name == rules.SEEK_CLOSE:
                found = self.reader.seek_close()
                if found is None:
                    names += self.do(self.rules.frames_lost())
        return names + self.handle(found or [])

    def receive(self, data):
        """The peer's bytes, as the transport's read callback gets them."""
        return self.handle(self.reader.feed(data))

    def handle(self, events):
        names = []
        for event in events:
            if isinstance(event, (bytes, str)):
                self.messages.append(event)
            elif isinstance(event, Close):
                names += self.do(self.rules.close_received(event.code, event.reason))
            elif isinstance(event, ProtocolError):
                names += self.do(self.rules.protocol_error(event, bool(self.messages)))
        return names

    def advance(self, seconds):
        """Move the clock on; the timer fires if its deadline has come."""
        self.now += seconds
        if self.deadline is not None and self.now >= self.deadline:
            self.deadline = None
            return self.do(self.rules.timer_fired())
        return []

    def peer_frame(self, opcode, payload):
        """A frame as the peer sends it: masked from a client, not from a server."""
        return masked_frame(opcode, payload, mask=not self.is_client)

    def peer_close(self, code, reason=""):
        return self.peer_frame(0x8, struct.pack("!H", code) + reason.encode())

    def frames_sent(self):
        """What the peer reads of all we sent."""
        return self.framing.FrameReader(not self.is_client).feed(self.sent)

    @property
    def state(self):
        return self.rules.state


@pytest.fixture(params=["server", "client"])
def side(request):
    return request.param == "client"


def test_the_peer_closes_first_and_the_server_closes_tcp(framing):
    conn = Connection(framing)
    actions = conn.receive(conn.peer_close(1000, "bye"))
    # The echo: the peer's code, without its reason, unmasked from a server.
    assert conn.sent == b"\x88\x02\x03\xe8"
    assert actions == [
        rules.SEND_CLOSE,
        rules.STOP_RECEIVING,
        rules.STOP_KEEPALIVE,
        rules.WAKE_SENDERS,
        rules.FLUSH,
        rules.CLOSE_TRANSPORT,
        rules.ARM_TIMER,
    ]
    assert (conn.state, conn.rules.frame_state) == (rules.ENDING, CLOSED)
    assert (conn.rules.close_code, conn.rules.close_reason) == (1000, "bye")
    assert conn.do(conn.rules.transport_lost())[:2] == [rules.CANCEL_TIMER, rules.STOP_RECEIVING]
    assert rules.WAKE_CLOSED_WAITERS in conn.actions
    assert conn.state == rules.CLOSED
    assert conn.rules.close_code == 1000  # not the loss's 1006


def test_a_close_without_a_code_is_answered_without_one(framing, side):
    conn = Connection(framing, is_client=side)
    conn.receive(conn.peer_frame(0x8, b""))
    assert conn.frames_sent() == [Close(1005, "")]
    assert conn.rules.close_code == 1005


def test_a_client_waits_for_the_server_to_close_tcp_within_the_bound(framing):
    conn = Connection(framing, is_client=True)
    actions = conn.receive(conn.peer_close(1001))
    assert conn.frames_sent() == [Close(1001, "")]
    assert rules.CLOSE_TRANSPORT not in actions
    assert actions[-2:] == [rules.FLUSH, rules.ARM_TIMER]
    assert conn.advance(TIMEOUT - 0.1) == []
    # The server did not close TCP in time: the client drops it.
    assert conn.advance(0.1) == [rules.ABORT_TRANSPORT]
    assert conn.rules.close_code == 1001
    conn.do(conn.rules.transport_lost())
    assert conn.state == rules.CLOSED


def test_we_close_first_read_on_and_end_when_the_peer_answers(framing, side):
    conn = Connection(framing, is_client=side)
    actions = conn.do(conn.rules.close_requested(4000, "done"))
    assert conn.frames_sent() == [Close(4000, "done")]
    assert actions == [
        rules.SEND_CLOSE,
        rules.FLUSH,
        rules.STOP_KEEPALIVE,
        rules.WAKE_SENDERS,
        rules.BOUND_QUEUE,
        rules.RESUME_READING,
        rules.ARM_TIMER,
    ]
    assert (conn.state, conn.rules.frame_state) == (rules.CLOSE_SENT, CLOSING)
    # Messages the peer sent before it saw our Close still arrive.
    assert conn.receive(conn.peer_frame(0x1, b"late")) == []
    assert conn.messages == ["late"]
    actions = conn.receive(conn.peer_close(4000, "ok"))
    assert rules.SEND_CLOSE not in actions
    assert (rules.CLOSE_TRANSPORT in actions) is not side
    assert conn.frames_sent() == [Close(4000, "done")]  # nothing more was sent
    assert (conn.rules.close_code, conn.rules.close_reason) == (4000, "ok")
    # A second request waits for the same end.
    assert conn.rules.close_requested(1000, "") == []
    # The one timer armed by the request bounds the whole handshake.
    assert conn.actions.count(rules.ARM_TIMER) == 1


def test_the_close_timeout_drops_a_peer_that_never_answers(framing, side):
    conn = Connection(framing, is_client=side)
    conn.do(conn.rules.close_requested())
    assert conn.advance(TIMEOUT / 2) == []
    assert conn.advance(TIMEOUT / 2) == [rules.STOP_RECEIVING, rules.ABORT_TRANSPORT]
    assert conn.rules.close_code == 1006
    assert conn.rules.sent_close == (1000, "")
    conn.do(conn.rules.transport_lost())
    assert conn.state == rules.CLOSED


@pytest.mark.parametrize(
    "payload, opcode, code",
    [
        (b"x", 0x3, 1002),  # a reserved opcode
        (b"\xff\xfe", 0x1, 1007),  # invalid UTF-8
        (b"x" * 2048, 0x2, 1009),  # over max_message_size (1024 below)
    ],
)
def test_a_protocol_error_sends_its_code_and_drains_until_the_peer_ends(
    framing, side, payload, opcode, code
):
    conn = Connection(framing, is_client=side)
    conn.reader = framing.FrameReader(side, max_message_size=1024)
    frame = conn.peer_frame(opcode, payload)
    actions = conn.receive(frame[: len(frame) // 2 + 2] if code == 1009 else frame)
    [sent] = conn.frames_sent()
    assert sent.code == code
    lost = code == 1002  # after a framing violation no frame can be found
    assert actions == [
        rules.SEND_CLOSE,
        rules.STOP_RECEIVING,
        rules.STOP_KEEPALIVE,
        rules.WAKE_SENDERS,
        *(SERVER_DRAIN_LOST if lost and not side else DRAIN),
    ]
    assert (conn.state, conn.rules.frame_state) == (rules.DRAINING, CLOSED)
    assert conn.rules.close_code == code
    # What still arrives is dropped; the peer's Close is found among it,
    # unless the frame boundaries were lost.
    rest = frame[len(frame) // 2 + 2 :] if code == 1009 else b""
    actions = conn.receive(rest + conn.peer_frame(0x2, b"more") + conn.peer_close(1000))
    assert conn.messages == []
    assert conn.rules.close_code == code
    if lost:
        assert actions == []
        # A peer that never ends TCP is dropped after the bound.
        assert conn.advance(TIMEOUT) == [rules.ABORT_TRANSPORT]
    else:
        assert conn.state == rules.ENDING
        assert actions == [rules.STOP_RECEIVING, rules.FLUSH] + (
            [] if side else [rules.CLOSE_TRANSPORT]
        )
    assert [close.code for close in conn.frames_sent()] == [code]


def test_garbage_after_a_failure_ends_the_search_for_the_close(framing, side):
    conn = Connection(framing, is_client=side)
    conn.reader = framing.FrameReader(side, max_message_size=1024)
    conn.receive(conn.peer_frame(0x2, b"x" * 2048))
    assert conn.state == rules.DRAINING
    # Reserved bits where the next frame should start: no frame can be trusted.
    actions = conn.receive(masked_frame(0x2, b"x", rsv=4, mask=not side) + conn.peer_close(1000))
    assert actions == ([] if side else [rules.HALF_CLOSE])
    assert (conn.state, conn.rules.close_code) == (rules.DRAINING, 1009)
    assert conn.advance(TIMEOUT) == [rules.ABORT_TRANSPORT]


def test_a_close_that_came_with_the_failure_ends_it_at_once(framing):
    conn = Connection(framing)
    conn.reader = framing.FrameReader(False, max_message_size=1024)
    actions = conn.receive(conn.peer_frame(0x2, b"x" * 2048) + conn.peer_close(1000))
    assert actions[-3:] == [rules.STOP_RECEIVING, rules.FLUSH, rules.CLOSE_TRANSPORT]
    assert (conn.state, conn.rules.close_code) == (rules.ENDING, 1009)


def test_a_close_with_a_reserved_code_is_a_protocol_error(framing, side):
    for reserved in (1004, 1005, 1006, 1015, 2999):
        conn = Connection(framing, is_client=side)
        conn.receive(conn.peer_close(reserved))
        assert conn.frames_sent() == [Close(1002, "invalid close code")]
        assert conn.rules.close_code == 1002


def test_a_keepalive_timeout_fails_cleanly_with_1011(framing):
    conn = Connection(framing)
    # The reader is in the middle of a message when the pong is overdue.
    message = conn.peer_frame(0x2, b"m" * 2000)
    conn.receive(message[:1000])
    actions = conn.do(conn.rules.fail(1011, "keepalive ping timeout"))
    assert conn.frames_sent() == [Close(1011, "keepalive ping timeout")]
    assert actions[-len(DRAIN) :] == DRAIN
    # The rest of the message is dropped; the peer's answer ends TCP.
    actions = conn.receive(message[1000:] + conn.peer_close(1011))
    assert actions[-1] == rules.CLOSE_TRANSPORT
    conn.do(conn.rules.transport_lost())
    assert (conn.state, conn.rules.close_code) == (rules.CLOSED, 1011)


def test_going_away_without_waiting_is_the_same_clean_close(framing, side):
    conn = Connection(framing, is_client=side)
    actions = conn.do(conn.rules.fail(1001, ""))
    assert conn.frames_sent() == [Close(1001, "")]
    assert actions[-len(DRAIN) :] == DRAIN


def test_a_long_failure_reason_is_cut_at_a_character_boundary(framing):
    conn = Connection(framing)
    conn.do(conn.rules.fail(1011, "é" * 100))
    [sent] = conn.frames_sent()
    assert sent.reason == "é" * 61  # 122 bytes: the 62nd would need 124


def test_the_transport_lost_mid_close_ends_everything(framing, side):
    conn = Connection(framing, is_client=side)
    conn.do(conn.rules.close_requested())
    actions = conn.do(conn.rules.transport_lost())
    assert actions == [
        rules.CANCEL_TIMER,
        rules.STOP_RECEIVING,
        rules.STOP_KEEPALIVE,
        rules.DROP_UNSENT,
        rules.WAKE_SENDERS,
        rules.WAKE_CLOSED_WAITERS,
    ]
    assert (conn.state, conn.rules.close_code) == (rules.CLOSED, 1006)
    assert conn.rules.close_reason == "the connection was lost"
    # Nothing that comes after changes anything.
    assert conn.advance(2 * TIMEOUT) == []
    assert conn.rules.close_received(1000, "") == []
    assert conn.rules.abort_requested() == []
    assert conn.rules.close_code == 1006


def test_closing_while_reading_is_paused_resumes_it_to_read_the_answer(framing, side):
    # Reading pauses when max_queue messages wait unread; the peer's Close
    # is behind them, so closing must read again (and then bound the queue
    # by dropping, not by pausing).
    for start in (lambda r: r.close_requested(), lambda r: r.fail(1011, "")):
        conn = Connection(framing, is_client=side)
        actions = conn.do(start(conn.rules))
        assert rules.RESUME_READING in actions
        assert actions.index(rules.RESUME_READING) < actions.index(rules.ARM_TIMER)


def test_closing_wakes_senders_waiting_for_the_buffer_to_drain(framing, side):
    for start in (
        lambda r: r.close_requested(),
        lambda r: r.fail(1002, ""),
        lambda r: r.close_received(1000, ""),
        lambda r: r.transport_lost(),
    ):
        conn = Connection(framing, is_client=side)
        actions = conn.do(start(conn.rules))
        assert rules.WAKE_SENDERS in actions
        # They learn it from the frame state: frames may not be sent any more.
        assert conn.rules.frame_state != OPEN


def test_a_failure_behind_unread_messages_waits_for_them(framing, side):
    conn = Connection(framing, is_client=side)
    actions = conn.receive(conn.peer_frame(0x1, b"valid") + conn.peer_frame(0x3, b""))
    assert actions == [rules.ARM_TIMER]
    assert (conn.state, conn.rules.frame_state) == (rules.FAILURE_PENDING, OPEN)
    assert conn.rules.pending_failure == ProtocolError(1002, "unknown opcode")
    assert conn.sent == b""
    # The application read "valid" and asks for more: the failure is due.
    actions = conn.do(conn.rules.failure_due())
    assert actions[:2] == [rules.CANCEL_TIMER, rules.SEND_CLOSE]
    assert conn.frames_sent() == [Close(1002, "unknown opcode")]
    assert conn.rules.pending_failure is None
    assert conn.state == rules.DRAINING


def test_a_pending_failure_is_sent_at_the_latest_after_the_bound(framing):
    conn = Connection(framing)
    conn.receive(conn.peer_frame(0x2, b"valid") + conn.peer_frame(0x1, b"\xff"))
    assert conn.advance(TIMEOUT)[0] == rules.SEND_CLOSE
    assert conn.frames_sent() == [Close(1007, "invalid UTF-8 in a text message")]
    # Draining has a bound of its own.
    assert conn.deadline == 2 * TIMEOUT


def test_closing_with_a_pending_failure_tells_the_peer_the_failure(framing):
    conn = Connection(framing)
    conn.receive(conn.peer_frame(0x2, b"valid") + conn.peer_frame(0x3, b""))
    conn.do(conn.rules.close_requested(1000, "bye"))
    assert conn.frames_sent() == [Close(1002, "unknown opcode")]
    assert conn.rules.close_code == 1002


def test_a_protocol_error_after_our_close_sends_no_second_close(framing, side):
    conn = Connection(framing, is_client=side)
    conn.do(conn.rules.close_requested())
    conn.receive(conn.peer_frame(0x2, b"unread"))
    actions = conn.receive(conn.peer_frame(0x3, b""))
    assert rules.SEND_CLOSE not in actions
    assert [frame.code for frame in conn.frames_sent()] == [1000]
    assert conn.state == rules.DRAINING and conn.rules.close_code == 1002
    assert conn.actions.count(rules.ARM_TIMER) == 1


def test_aborting_drops_tcp_without_a_close_frame(framing, side):
    conn = Connection(framing, is_client=side)
    actions = conn.do(conn.rules.abort_requested())
    assert actions == [rules.STOP_RECEIVING, rules.DROP_UNSENT, rules.ABORT_TRANSPORT]
    assert conn.sent == b""
    assert (conn.rules.close_code, conn.rules.close_reason) == (
        1006,
        "the connection was closed locally",
    )


def test_an_invalid_close_request_changes_nothing(framing):
    conn = Connection(framing)
    for code, reason in ((1005, ""), (999, ""), (1000, "x" * 124)):
        with pytest.raises(ValueError):
            conn.rules.close_requested(code, reason)
    assert (conn.state, conn.sent, conn.rules.sent_close) == (rules.OPEN, b"", None)


def test_every_rule_leads_to_a_state_the_core_can_see():
    for (state, event), (next_state, actions) in rules._RULES.items():
        assert state in rules.FRAME_STATES and next_state in rules.FRAME_STATES
        # Once a state stops frames, none leads back to sending them.
        if rules.FRAME_STATES[state] == CLOSED:
            assert rules.FRAME_STATES[next_state] == CLOSED
            assert rules.SEND_CLOSE not in actions
