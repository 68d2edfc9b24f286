"""Negotiating permessage-deflate (RFC 7692 sections 5 to 7), without I/O.

The client puts one or more offers into ``Sec-WebSocket-Extensions``
(``client_offer``); the server takes the first offer it can accept and
answers with the parameters both sides will use (``server_answer``); the
client checks that answer against what it offered (``check_server_answer``).
Each side then knows a ``DeflateParameters``: how the server and the client
compress, and so how each inflates what the other sends.

The four parameters, as RFC 7692 section 7.1 defines them:

* ``server_no_context_takeover`` / ``client_no_context_takeover``: that side
  starts every message with an empty LZ77 window, so its compressor (and
  the peer's decompressor) keeps no state between messages;
* ``server_max_window_bits`` / ``client_max_window_bits``: the largest LZ77
  window, as a power of two from 8 to 15, that side compresses with.

An offer or an answer whose syntax or parameters are wrong is never guessed
at: the server declines such an offer (and takes a later one, or none); the
client fails the handshake on such an answer.
"""

from __future__ import annotations

import re
from typing import Iterable, List, NamedTuple, Optional, Tuple

from anynet._http_message import TOKEN

__all__ = [
    "EXTENSION_NAME",
    "DeflateParameters",
    "NegotiationError",
    "PerMessageDeflate",
    "check_server_answer",
    "client_offer",
    "parse_extensions",
    "server_answer",
]

EXTENSION_NAME = "permessage-deflate"

MIN_WINDOW_BITS = 8
MAX_WINDOW_BITS = 15

# RFC 7230 section 3.2.6: tokens, quoted strings and the optional white space
# of the Sec-WebSocket-Extensions grammar (RFC 6455 section 9.1).
_TOKEN = TOKEN.pattern
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t\x20-\x7e\x80-\xff])*"'
_OWS = r"[ \t]*"
_PARAMETER_SYNTAX = rf"{_OWS};{_OWS}({_TOKEN}){_OWS}(?:={_OWS}({_TOKEN}|{_QUOTED}){_OWS})?"
_PARAMETER = re.compile(_PARAMETER_SYNTAX)
# One list element, possibly empty as RFC 7230's #rule allows, and its comma.
_ELEMENT = re.compile(rf"{_OWS}(?:({_TOKEN})((?:{_PARAMETER_SYNTAX})*))?{_OWS}(?:,|\Z)")
# RFC 7692 section 7.1.2: a decimal integer from 8 to 15, no leading zeros.
_WINDOW_BITS = re.compile(r"8|9|1[0-5]")

Parameters = List[Tuple[str, Optional[str]]]


class NegotiationError(ValueError):
    """A Sec-WebSocket-Extensions value that breaks its grammar or RFC 7692."""


def parse_extensions(value: str) -> List[Tuple[str, Parameters]]:
    """The elements of a Sec-WebSocket-Extensions value, in order: each an
    extension name and its parameters (name, value or None), names in lower
    case, quoted values unquoted. ``NegotiationError`` on a syntax error.

    Header lines repeated in a request are one value joined with commas.
    """
    elements: List[Tuple[str, Parameters]] = []
    position = 0
    while position < len(value):
        match = _ELEMENT.match(value, position)
        if match is None:
            raise NegotiationError(f"invalid Sec-WebSocket-Extensions value: {value!r}")
        if match.group(1):
            elements.append((match.group(1).lower(), _parse_parameters(match.group(2))))
        position = match.end()
    return elements


def _parse_parameters(text: str) -> Parameters:
    parameters: Parameters = []
    for match in _PARAMETER.finditer(text):
        name, raw = match.group(1).lower(), match.group(2)
        if raw is not None and raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            # RFC 6455 section 9.1: a quoted value must still be a token.
            if not TOKEN.fullmatch(raw):
                raise NegotiationError(f"the quoted value of {name} is not a token: {raw!r}")
        parameters.append((name, raw))
    return parameters


class DeflateParameters(NamedTuple):
    """What one connection agreed on: how each side compresses."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = MAX_WINDOW_BITS
    client_max_window_bits: int = MAX_WINDOW_BITS

    def compressor(self, is_client: bool) -> Tuple[int, bool]:
        """The window bits and no-context-takeover of our own compressor."""
        if is_client:
            return self.client_max_window_bits, self.client_no_context_takeover
        return self.server_max_window_bits, self.server_no_context_takeover

    def decompressor(self, is_client: bool) -> Tuple[int, bool]:
        """The window bits and no-context-takeover of the peer's compressor."""
        return self.compressor(not is_client)


class PerMessageDeflate(NamedTuple):
    """permessage-deflate for the ``compression`` option of ``connect``,
    ``serve`` and ``route``: what one side asks for and accepts, in the
    terms of RFC 7692, and how it compresses.

    For a client, the offer: the server is asked to reset its context
    (``server_no_context_takeover``) or to use at most
    ``server_max_window_bits``; the client resets its own context if
    ``client_no_context_takeover`` and compresses with at most
    ``client_max_window_bits``, and always lets the server ask for a
    smaller window.

    For a server, the answer to any acceptable offer: the server resets its
    context if ``server_no_context_takeover`` and compresses with at most
    ``server_max_window_bits``; it asks the client to reset its context if
    ``client_no_context_takeover``, and to use at most
    ``client_max_window_bits`` when the offer lets it ask. A client's
    stricter demands are always honoured.

    Either side compresses at zlib's ``level`` (1, the fastest, by default)
    and sends messages shorter than ``min_size`` bytes (characters, for
    text) uncompressed: deflate makes very short messages longer.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = MAX_WINDOW_BITS
    client_max_window_bits: int = MAX_WINDOW_BITS
    level: int = 1
    min_size: int = 64


def check_settings(settings: PerMessageDeflate) -> PerMessageDeflate:
    """``settings`` if every field is valid; ``TypeError``/``ValueError`` otherwise."""
    for name in ("server_no_context_takeover", "client_no_context_takeover"):
        if not isinstance(getattr(settings, name), bool):
            raise TypeError(f"{name} must be True or False, not {getattr(settings, name)!r}")
    for name, low, high in (
        ("server_max_window_bits", MIN_WINDOW_BITS, MAX_WINDOW_BITS),
        ("client_max_window_bits", MIN_WINDOW_BITS, MAX_WINDOW_BITS),
        ("level", -1, 9),
        ("min_size", 0, None),
    ):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise ValueError(f"{name} must be {bounds}, not {value}")
    return settings


def client_offer(offers: Iterable[PerMessageDeflate]) -> str:
    """The Sec-WebSocket-Extensions value offering each of ``offers``, the
    preferred first (a server takes the first it accepts)."""
    return ", ".join(_render_offer(offer) for offer in offers)


def _render_offer(offer: PerMessageDeflate) -> str:
    parts = [EXTENSION_NAME]
    if offer.server_no_context_takeover:
        parts.append("server_no_context_takeover")
    if offer.client_no_context_takeover:
        parts.append("client_no_context_takeover")
    if offer.server_max_window_bits < MAX_WINDOW_BITS:
        parts.append(f"server_max_window_bits={offer.server_max_window_bits}")
    # Without a value: "the server may choose any window for us".
    if offer.client_max_window_bits < MAX_WINDOW_BITS:
        parts.append(f"client_max_window_bits={offer.client_max_window_bits}")
    else:
        parts.append("client_max_window_bits")
    return "; ".join(parts)


class _Offer(NamedTuple):
    """One permessage-deflate offer as received. ``client_max_window_bits``
    is None when absent and 15 when present without a value."""

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: Optional[int]
    client_max_window_bits: Optional[int]


def _read_parameters(parameters: Parameters, *, answer: bool) -> _Offer:
    """The four parameters of an offer (``answer=False``) or of a server's
    answer; ``NegotiationError`` on unknown, repeated or invalid ones."""
    seen = set()
    flags = {"server_no_context_takeover": False, "client_no_context_takeover": False}
    bits: dict[str, Optional[int]] = {"server_max_window_bits": None, "client_max_window_bits": None}
    for name, value in parameters:
        if name in seen:
            raise NegotiationError(f"{name} appears twice")
        seen.add(name)
        if name in flags:
            if value is not None:
                raise NegotiationError(f"{name} takes no value")
            flags[name] = True
        elif name in bits:
            if value is None:
                # Only an offer may leave the client's window to the server.
                if answer or name == "server_max_window_bits":
                    raise NegotiationError(f"{name} needs a value")
                bits[name] = MAX_WINDOW_BITS
            elif not _WINDOW_BITS.fullmatch(value):
                raise NegotiationError(f"{name} must be from 8 to 15, not {value!r}")
            else:
                bits[name] = int(value)
        else:
            raise NegotiationError(f"unknown permessage-deflate parameter {name}")
    return _Offer(
        flags["server_no_context_takeover"],
        flags["client_no_context_takeover"],
        bits["server_max_window_bits"],
        bits["client_max_window_bits"],
    )


def server_answer(
    request_value: Optional[str], settings: PerMessageDeflate
) -> Optional[Tuple[str, DeflateParameters]]:
    """The server's choice among a request's offers: the Sec-WebSocket-Extensions
    value to answer with and the agreed parameters, or None to decline them all
    (no offer, a malformed header, or no offer we can accept)."""
    if not request_value:
        return None
    try:
        elements = parse_extensions(request_value)
    except NegotiationError:
        return None
    for name, parameters in elements:
        if name != EXTENSION_NAME:
            continue
        try:
            offer = _read_parameters(parameters, answer=False)
        except NegotiationError:
            continue  # RFC 7692 section 5: decline this offer, try the next
        return _accept(offer, settings)
    return None


def _accept(offer: _Offer, settings: PerMessageDeflate) -> Tuple[str, DeflateParameters]:
    server_bits = settings.server_max_window_bits
    if offer.server_max_window_bits is not None:
        server_bits = min(server_bits, offer.server_max_window_bits)
    # The client's window can only be asked for if the offer allows it; a
    # client that offers a value uses at most that value anyway.
    client_bits = MAX_WINDOW_BITS
    if offer.client_max_window_bits is not None:
        client_bits = min(settings.client_max_window_bits, offer.client_max_window_bits)
    agreed = DeflateParameters(
        server_no_context_takeover=offer.server_no_context_takeover or settings.server_no_context_takeover,
        client_no_context_takeover=offer.client_no_context_takeover or settings.client_no_context_takeover,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
    )
    parts = [EXTENSION_NAME]
    if agreed.server_no_context_takeover:
        parts.append("server_no_context_takeover")
    if agreed.client_no_context_takeover:
        parts.append("client_no_context_takeover")
    # Section 7.1.2.1: an offered server_max_window_bits must be answered.
    if offer.server_max_window_bits is not None or server_bits < MAX_WINDOW_BITS:
        parts.append(f"server_max_window_bits={server_bits}")
    if offer.client_max_window_bits is not None and client_bits < MAX_WINDOW_BITS:
        parts.append(f"client_max_window_bits={client_bits}")
    return "; ".join(parts), agreed


def check_server_answer(
    response_value: Optional[str], offers: List[PerMessageDeflate]
) -> Optional[DeflateParameters]:
    """The parameters a server's answer agrees on, or None if it declined
    (no Sec-WebSocket-Extensions). ``NegotiationError`` if the answer is not
    one that our ``offers`` allow: another extension, permessage-deflate
    twice, invalid parameters, or parameters that match none of the offers.
    """
    if response_value is None:
        return None
    elements = parse_extensions(response_value)
    for name, _ in elements:
        if name != EXTENSION_NAME or not offers:
            raise NegotiationError(f"the server chose the extension {name!r}, which was not offered")
    if len(elements) != 1:
        if not elements:
            raise NegotiationError("the server's Sec-WebSocket-Extensions header is empty")
        raise NegotiationError("the server chose permessage-deflate more than once")
    answer = _read_parameters(elements[0][1], answer=True)
    problems = []
    for offer in offers:
        problem = _answer_problem(answer, offer)
        if problem is None:
            return DeflateParameters(
                server_no_context_takeover=answer.server_no_context_takeover,
                client_no_context_takeover=answer.client_no_context_takeover,
                server_max_window_bits=(
                    MAX_WINDOW_BITS if answer.server_max_window_bits is None else answer.server_max_window_bits
                ),
                client_max_window_bits=(
                    offer.client_max_window_bits
                    if answer.client_max_window_bits is None
                    else answer.client_max_window_bits
                ),
            )
        problems.append(problem)
    raise NegotiationError(f"the server's permessage-deflate parameters do not match our offer: {problems[0]}")


def _answer_problem(answer: _Offer, offer: PerMessageDeflate) -> Optional[str]:
    """Why ``answer`` cannot answer ``offer``, or None if it can."""
    if offer.server_no_context_takeover and not answer.server_no_context_takeover:
        return "server_no_context_takeover was requested but not confirmed"
    if (
        offer.server_max_window_bits < MAX_WINDOW_BITS
        and (answer.server_max_window_bits or MAX_WINDOW_BITS) > offer.server_max_window_bits
    ):
        return f"server_max_window_bits above the {offer.server_max_window_bits} requested"
    if answer.client_max_window_bits is not None and answer.client_max_window_bits > offer.client_max_window_bits:
        return f"client_max_window_bits above the {offer.client_max_window_bits} offered"
    return None
