"""The browser and nginx tests skip only where their program is missing, and
fail instead where CI asks for them (ANYNET_REQUIRE_SYSTEM_PEERS=1)."""

import pytest

from support import system_program

MISSING = "anynet-no-such-program"


def test_a_missing_program_skips_with_the_package_to_install(monkeypatch):
    monkeypatch.delenv("ANYNET_REQUIRE_SYSTEM_PEERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{MISSING} is not installed"):
        system_program(MISSING)


def test_a_missing_program_fails_where_it_is_required(monkeypatch):
    monkeypatch.setenv("ANYNET_REQUIRE_SYSTEM_PEERS", "1")
    with pytest.raises(pytest.fail.Exception, match="ANYNET_REQUIRE_SYSTEM_PEERS is set"):
        system_program(MISSING)


def test_an_installed_program_is_found():
    assert system_program("sh").endswith("/sh")
