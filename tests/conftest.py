"""Shared fixtures: both framing backends, and both event loops."""

import asyncio
import importlib
import os

import pytest
import pytest_asyncio.plugin
from hypothesis import settings

# Property tests: a quick run by default, thousands of examples where CI sets
# HYPOTHESIS_PROFILE=ci. No deadline: the machine's load is not the code's fault.
settings.register_profile("default", max_examples=200, deadline=None)
settings.register_profile("ci", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

try:
    import uvloop
except ImportError:  # uvloop does not exist on Windows
    uvloop = None

EXTENSIONS_DISABLED = os.environ.get("ANYNET_NO_EXTENSIONS", "") not in ("", "0")

# With extensions enabled the compiled backend must be importable: a build that
# silently fell back to pure Python fails these tests instead of skipping them.
FRAMING_BACKENDS = ["python"] if EXTENSIONS_DISABLED else ["compiled", "python"]
_BACKEND_MODULES = {"compiled": "anynet._framing_c", "python": "anynet._framing"}


@pytest.fixture(params=FRAMING_BACKENDS)
def framing(request):
    """The framing module under test: every framing test runs on each backend."""
    return importlib.import_module(_BACKEND_MODULES[request.param])


_DEFLATE_MODULES = {"compiled": "anynet._deflate_c", "python": "anynet._deflate"}


@pytest.fixture(params=FRAMING_BACKENDS)
def deflate(request):
    """The permessage-deflate codec under test: one source, compiled or interpreted."""
    return importlib.import_module(_DEFLATE_MODULES[request.param])


_CORE_MODULES = {"compiled": "anynet._connection_core_c", "python": "anynet._connection_core"}


@pytest.fixture(params=FRAMING_BACKENDS)
def core(request):
    """The connection core module (the per-message path) under test, on each backend.

    The connection tests run on the backend that ``anynet._backend`` chose;
    CI runs them again with ``ANYNET_NO_EXTENSIONS=1``.
    """
    return importlib.import_module(_CORE_MODULES[request.param])


LOOP_FACTORIES = {"asyncio": asyncio.new_event_loop}
if uvloop is not None:
    LOOP_FACTORIES["uvloop"] = uvloop.new_event_loop

# Every async test runs on the standard event loop and on uvloop. pytest-asyncio
# 1.5 takes the loops from a hook; the releases before it (the last ones for
# Python 3.9) from a parametrised event-loop-policy fixture.
if hasattr(getattr(pytest_asyncio.plugin, "PytestAsyncioSpecs", None), "pytest_asyncio_loop_factories"):

    def pytest_asyncio_loop_factories(config, item):
        return LOOP_FACTORIES

else:
    _LOOP_POLICIES = {"asyncio": asyncio.DefaultEventLoopPolicy}
    if uvloop is not None:
        _LOOP_POLICIES["uvloop"] = uvloop.EventLoopPolicy

    @pytest.fixture(scope="session", params=list(_LOOP_POLICIES))
    def event_loop_policy(request):
        return _LOOP_POLICIES[request.param]()


def pytest_report_header(config):
    from anynet import _backend

    return f"anynet framing backend: {_backend.BACKEND}; tested backends: {FRAMING_BACKENDS}"


class PKI:
    """A throwaway certificate authority with the certificates tests need.

    ``ca`` signs ``server_cert`` (CN localhost; valid for localhost, 127.0.0.1
    and ::1) and ``client_cert``; the ``*_key`` attributes hold their keys.
    """

    def __init__(self):
        from anynet.tls import TLSCertificate, TLSPrivateKey

        self.ca_key = TLSPrivateKey.generate()
        self.ca = TLSCertificate.generate(self.ca_key, authority=True)
        self.ca.subject["CN"] = "anynet test CA"
        self.ca.issuer = self.ca.subject
        self.ca.sign(self.ca_key)
        self.server_key, self.server_cert = self.issue(
            "localhost", dns=["localhost"], ips=["127.0.0.1", "::1"]
        )
        self.client_key, self.client_cert = self.issue("anynet test client")

    def issue(self, common_name, dns=(), ips=()):
        """A fresh (key, certificate) pair for ``common_name``, signed by the CA."""
        from anynet.tls import TLSCertificate, TLSPrivateKey

        key = TLSPrivateKey.generate()
        cert = TLSCertificate.generate(key)
        cert.subject["CN"] = common_name
        cert.issuer = self.ca.subject
        if dns or ips:
            cert.add_subject_alternative_names(dns=dns, ips=ips)
        cert.sign(self.ca_key)
        return key, cert

    def server_context(self, require_client_certificate=False):
        """A new server TLSContext with the server certificate; optionally it
        requires a client certificate signed by the CA."""
        from anynet.tls import TLSContext

        context = TLSContext()
        context.set_certificate(self.server_cert, self.server_key)
        if require_client_certificate:
            context.set_authority(self.ca)
        return context

    def client_context(self, with_certificate=False):
        """A new client TLSContext that trusts only the CA; optionally it
        presents the client certificate."""
        from anynet.tls import TLSContext

        context = TLSContext()
        context.set_authority(self.ca)
        if with_certificate:
            context.set_certificate(self.client_cert, self.client_key)
        return context


@pytest.fixture(scope="session")
def pki():
    """One PKI per test session: generating RSA keys is slow."""
    return PKI()
