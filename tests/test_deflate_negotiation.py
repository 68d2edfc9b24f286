"""permessage-deflate negotiation (RFC 7692 sections 5 to 7), with header strings only."""

from __future__ import annotations

import itertools

import pytest

from anynet._deflate_negotiation import (
    DeflateParameters,
    PerMessageDeflate,
    NegotiationError,
    check_server_answer,
    check_settings,
    client_offer,
    parse_extensions,
    server_answer,
)

ANY = PerMessageDeflate()


# ----------------------------------------------------------------------
# The header grammar (RFC 6455 section 9.1)


def test_parse_several_elements_with_parameters() -> None:
    value = 'permessage-deflate; client_max_window_bits, Permessage-Deflate ;SERVER_MAX_WINDOW_BITS="10" , ,x-foo'
    assert parse_extensions(value) == [
        ("permessage-deflate", [("client_max_window_bits", None)]),
        ("permessage-deflate", [("server_max_window_bits", "10")]),
        ("x-foo", []),
    ]


def test_parse_empty_value_and_empty_elements() -> None:
    assert parse_extensions("") == []
    assert parse_extensions(" , ,") == []


@pytest.mark.parametrize(
    "value",
    ["a;", "a b", ";x", "a=1", "a; x=", 'a; x="1 2"', 'a; x="unterminated', "a; x=1 2", "a;;x", "é"],
)
def test_parse_refuses_syntax_errors(value: str) -> None:
    with pytest.raises(NegotiationError):
        parse_extensions(value)


# ----------------------------------------------------------------------
# The server's choice


def answer(value: str, settings: PerMessageDeflate = ANY) -> tuple[str, DeflateParameters] | None:
    return server_answer(value, settings)


def test_server_declines_without_an_offer() -> None:
    assert answer("") is None
    assert server_answer(None, ANY) is None
    assert answer("x-webkit-deflate-frame, x-other; a=1") is None


def test_server_accepts_the_offer_of_browsers() -> None:
    assert answer("permessage-deflate; client_max_window_bits") == (
        "permessage-deflate",
        DeflateParameters(),
    )


def test_server_accepts_a_bare_offer() -> None:
    assert answer("permessage-deflate") == ("permessage-deflate", DeflateParameters())


def test_server_honours_every_parameter_of_an_offer() -> None:
    offer = (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=10; client_max_window_bits=9"
    )
    assert answer(offer) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=10; client_max_window_bits=9",
        DeflateParameters(True, True, 10, 9),
    )


def test_server_answers_an_offered_window_even_at_15() -> None:
    # Section 7.1.2.1: an offer with server_max_window_bits is accepted by
    # including it in the answer.
    assert answer("permessage-deflate; server_max_window_bits=15") == (
        "permessage-deflate; server_max_window_bits=15",
        DeflateParameters(),
    )


def test_server_asks_for_what_its_settings_say() -> None:
    settings = PerMessageDeflate(True, True, 11, 10)
    assert answer("permessage-deflate; client_max_window_bits", settings) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=11; client_max_window_bits=10",
        DeflateParameters(True, True, 11, 10),
    )


def test_server_cannot_ask_for_a_client_window_the_offer_does_not_allow() -> None:
    settings = PerMessageDeflate(client_max_window_bits=10)
    assert answer("permessage-deflate", settings) == ("permessage-deflate", DeflateParameters())


def test_the_smaller_of_offer_and_settings_wins() -> None:
    settings = PerMessageDeflate(server_max_window_bits=12, client_max_window_bits=12)
    offer = "permessage-deflate; server_max_window_bits=13; client_max_window_bits=9"
    assert answer(offer, settings) == (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=9",
        DeflateParameters(server_max_window_bits=12, client_max_window_bits=9),
    )
    offer = "permessage-deflate; server_max_window_bits=8; client_max_window_bits=14"
    assert answer(offer, settings) == (
        "permessage-deflate; server_max_window_bits=8; client_max_window_bits=12",
        DeflateParameters(server_max_window_bits=8, client_max_window_bits=12),
    )


def test_an_offered_client_window_binds_without_being_answered() -> None:
    # The client compresses with at most what it offered; the server need
    # not repeat it, but must inflate with that window.
    assert answer("permessage-deflate; client_max_window_bits=10") == (
        "permessage-deflate; client_max_window_bits=10",
        DeflateParameters(client_max_window_bits=10),
    )


@pytest.mark.parametrize(
    "bad",
    [
        "server_no_context_takeover; server_no_context_takeover",
        "client_max_window_bits; client_max_window_bits=10",
        "server_max_window_bits=10; server_max_window_bits=10",
        "server_no_context_takeover=1",
        'client_no_context_takeover="x"',
        "server_max_window_bits",
        "server_max_window_bits=7",
        "server_max_window_bits=16",
        "server_max_window_bits=08",
        "client_max_window_bits=0",
        "client_max_window_bits=abc",
        "client_max_window_bits=-9",
        "unknown_parameter",
        "mux",
    ],
)
def test_server_declines_an_invalid_offer_and_takes_the_next(bad: str) -> None:
    assert answer(f"permessage-deflate; {bad}") is None
    assert answer(f"permessage-deflate; {bad}, permessage-deflate; client_no_context_takeover") == (
        "permessage-deflate; client_no_context_takeover",
        DeflateParameters(client_no_context_takeover=True),
    )


def test_server_takes_the_first_acceptable_offer() -> None:
    value = (
        "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=10,"
        " permessage-deflate"
    )
    assert answer(value) == (
        "permessage-deflate; server_max_window_bits=10",
        DeflateParameters(server_max_window_bits=10),
    )


def test_server_accepts_quoted_values() -> None:
    assert answer('permessage-deflate; server_max_window_bits="9"') == (
        "permessage-deflate; server_max_window_bits=9",
        DeflateParameters(server_max_window_bits=9),
    )


def test_server_declines_a_malformed_header() -> None:
    assert answer("permessage-deflate; client_max_window_bits=") is None
    assert answer('permessage-deflate; server_max_window_bits="1 0"') is None


# ----------------------------------------------------------------------
# The client's offer and its check of the answer


def test_client_offers_what_browsers_offer_by_default() -> None:
    assert client_offer([ANY]) == "permessage-deflate; client_max_window_bits"


def test_client_offers_every_parameter() -> None:
    assert client_offer([PerMessageDeflate(True, True, 10, 9), ANY]) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=10; client_max_window_bits=9,"
        " permessage-deflate; client_max_window_bits"
    )


def check(value: str | None, offers: list[PerMessageDeflate] | None = None) -> DeflateParameters | None:
    return check_server_answer(value, [ANY] if offers is None else offers)


def test_client_accepts_a_declined_offer() -> None:
    assert check(None) is None


def test_client_reads_every_parameter_of_an_answer() -> None:
    value = (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=10; client_max_window_bits=9"
    )
    assert check(value) == DeflateParameters(True, True, 10, 9)
    assert check("Permessage-Deflate") == DeflateParameters()


def test_client_uses_the_window_it_offered_when_the_answer_is_silent() -> None:
    assert check("permessage-deflate", [PerMessageDeflate(client_max_window_bits=11)]) == (
        DeflateParameters(client_max_window_bits=11)
    )


def test_client_honours_a_server_that_asks_more_than_offered() -> None:
    # A server may reset its own context or narrow its window unasked, and
    # ask the client to reset its context.
    assert check("permessage-deflate; server_no_context_takeover; client_no_context_takeover") == (
        DeflateParameters(True, True)
    )
    assert check("permessage-deflate; server_max_window_bits=12") == (
        DeflateParameters(server_max_window_bits=12)
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x-webkit-deflate-frame",
        "permessage-deflate, x-foo",
        "permessage-deflate, permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_no_context_takeover=1",
        "permessage-deflate; foo",
        "permessage-deflate;",
    ],
)
def test_client_refuses_an_invalid_answer(value: str) -> None:
    with pytest.raises(NegotiationError):
        check(value)


def test_client_refuses_an_answer_to_an_offer_it_did_not_make() -> None:
    with pytest.raises(NegotiationError, match="not offered"):
        check("permessage-deflate", [])


def test_client_refuses_an_answer_that_breaks_its_offer() -> None:
    strict = PerMessageDeflate(server_no_context_takeover=True, server_max_window_bits=10, client_max_window_bits=9)
    for value in [
        "permessage-deflate; server_max_window_bits=10",  # takeover not confirmed
        "permessage-deflate; server_no_context_takeover",  # window not answered
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=11",
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=10",
    ]:
        with pytest.raises(NegotiationError, match="do not match"):
            check(value, [strict])
    assert check("permessage-deflate; server_no_context_takeover; server_max_window_bits=9", [strict]) == (
        DeflateParameters(True, False, 9, 9)
    )


def test_client_matches_the_answer_to_a_fallback_offer() -> None:
    offers = [PerMessageDeflate(server_no_context_takeover=True), ANY]
    assert check("permessage-deflate", offers) == DeflateParameters()
    assert check("permessage-deflate; server_no_context_takeover", offers) == DeflateParameters(True)


@pytest.mark.parametrize(
    "client, server",
    [
        (PerMessageDeflate(*flags, *bits), PerMessageDeflate(*flags2, *bits2))
        for flags, bits, flags2, bits2 in itertools.product(
            [(False, False), (True, False), (False, True)],
            [(15, 15), (8, 12)],
            [(False, False), (True, True)],
            [(15, 15), (10, 9)],
        )
    ],
)
def test_both_sides_agree(client: PerMessageDeflate, server: PerMessageDeflate) -> None:
    chosen = server_answer(client_offer([client]), server)
    assert chosen is not None
    value, agreed = chosen
    assert check_server_answer(value, [client]) == agreed
    assert agreed.server_no_context_takeover == (client.server_no_context_takeover or server.server_no_context_takeover)
    assert agreed.server_max_window_bits == min(client.server_max_window_bits, server.server_max_window_bits)
    assert agreed.client_max_window_bits == min(client.client_max_window_bits, server.client_max_window_bits)


def test_parameters_per_role() -> None:
    agreed = DeflateParameters(True, False, 10, 12)
    assert agreed.compressor(is_client=False) == (10, True)
    assert agreed.decompressor(is_client=False) == (12, False)
    assert agreed.compressor(is_client=True) == (12, False)
    assert agreed.decompressor(is_client=True) == (10, True)


def test_settings_are_checked() -> None:
    assert check_settings(PerMessageDeflate(True, False, 8, 15)) == PerMessageDeflate(True, False, 8, 15)
    with pytest.raises(ValueError, match="from 8 to 15"):
        check_settings(PerMessageDeflate(server_max_window_bits=16))
    with pytest.raises(TypeError, match="int"):
        check_settings(PerMessageDeflate(client_max_window_bits=True))
    with pytest.raises(TypeError, match="True or False"):
        check_settings(PerMessageDeflate(server_no_context_takeover=1))  # type: ignore[arg-type]
