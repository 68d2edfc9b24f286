"""anynet.tls: keys, certificates and contexts, proven over real TLS on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import ssl
import stat
import sys
import tempfile
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.x509.oid import NameOID

from anynet.tls import (
    DEFAULT_VALIDITY,
    NAME_ITEMS,
    TYPE_DER,
    TYPE_PEM,
    TLSCertificate,
    TLSContext,
    TLSPrivateKey,
    X509Name,
    load_certificate_chain,
    peer_certificate,
)
from anynet.tls import _load_identity
from support import TIMEOUT

GREETING = b"hello over TLS"


# -- helpers -----------------------------------------------------------------


def self_signed(key: TLSPrivateKey, common_name: str, **names) -> TLSCertificate:
    cert = TLSCertificate.generate(key)
    cert.subject["CN"] = common_name
    cert.issuer = cert.subject
    if names:
        cert.add_subject_alternative_names(**names)
    cert.sign(key)
    return cert


@pytest.fixture(scope="module")
def stranger():
    """A self-signed (key, certificate) for 127.0.0.1 that the test CA never saw."""
    key = TLSPrivateKey.generate()
    return key, self_signed(key, "stranger", ips=["127.0.0.1"])


@pytest.fixture(scope="module")
def intermediate_chain(pki):
    """(leaf key, [leaf, intermediate CA]) where only the intermediate is signed by the root."""
    intermediate_key = TLSPrivateKey.generate()
    intermediate = TLSCertificate.generate(intermediate_key, authority=True)
    intermediate.subject["CN"] = "anynet intermediate CA"
    intermediate.issuer = pki.ca.subject
    intermediate.sign(pki.ca_key)

    leaf_key = TLSPrivateKey.generate()
    leaf = TLSCertificate.generate(leaf_key)
    leaf.subject["CN"] = "localhost"
    leaf.issuer = intermediate.subject
    leaf.add_subject_alternative_names(dns=["localhost"], ips=["127.0.0.1"])
    leaf.sign(intermediate_key)
    return leaf_key, [leaf, intermediate]


class TLSServer:
    """A loopback TLS server that greets each client and records its certificate."""

    def __init__(self) -> None:
        self.port = 0
        self.peer_certificates: list[TLSCertificate | None] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peer_certificates.append(peer_certificate(writer.transport))
        writer.write(GREETING)
        await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def tls_server(context: TLSContext):
    state = TLSServer()
    server = await asyncio.start_server(state._handle, "127.0.0.1", 0, ssl=context.get(True))
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), TIMEOUT)


async def fetch_greeting(
    port: int, context: TLSContext, server_hostname: str | None = None
) -> tuple[bytes, TLSCertificate | None]:
    """Connect, read until the server closes; return the data and the server's certificate."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", port, ssl=context.get(False), server_hostname=server_hostname
        ),
        TIMEOUT,
    )
    try:
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
        return data, peer_certificate(writer.transport)
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await asyncio.wait_for(writer.wait_closed(), TIMEOUT)


# -- TLS over loopback ---------------------------------------------------------


async def test_client_trusting_the_ca_connects_by_ip_address(pki):
    async with tls_server(pki.server_context()) as server:
        data, server_cert = await fetch_greeting(server.port, pki.client_context())
    assert data == GREETING
    assert server_cert == pki.server_cert
    # The server asked for no client certificate, so it saw none.
    assert server.peer_certificates == [None]


async def test_client_trusting_the_ca_connects_by_host_name(pki):
    async with tls_server(pki.server_context()) as server:
        data, _ = await fetch_greeting(server.port, pki.client_context(), "localhost")
    assert data == GREETING


async def test_default_client_rejects_an_untrusted_issuer(pki):
    async with tls_server(pki.server_context()) as server:
        with pytest.raises(ssl.SSLCertVerificationError) as failure:
            await fetch_greeting(server.port, TLSContext())
    assert failure.value.verify_code == 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert server.peer_certificates == []


async def test_client_rejects_a_wrong_host_name(pki):
    async with tls_server(pki.server_context()) as server:
        with pytest.raises(ssl.SSLCertVerificationError) as failure:
            await fetch_greeting(server.port, pki.client_context(), "wrong.example")
    assert failure.value.verify_code == 62  # X509_V_ERR_HOSTNAME_MISMATCH


async def test_disabled_verification_accepts_any_server(pki):
    context = TLSContext()
    context.disable_verification()
    async with tls_server(pki.server_context()) as server:
        data, server_cert = await fetch_greeting(server.port, context, "wrong.example")
    assert data == GREETING
    assert server_cert == pki.server_cert


async def test_disabled_verification_wins_over_an_authority(pki, stranger):
    context = pki.client_context()
    context.disable_verification()
    stranger_server = TLSContext()
    stranger_server.set_certificate(stranger[1], stranger[0])
    async with tls_server(stranger_server) as server:
        data, _ = await fetch_greeting(server.port, context)
    assert data == GREETING


async def test_mutual_tls_server_reads_the_client_subject(pki):
    async with tls_server(pki.server_context(require_client_certificate=True)) as server:
        data, _ = await fetch_greeting(server.port, pki.client_context(with_certificate=True))
    assert data == GREETING
    [client_cert] = server.peer_certificates
    assert client_cert is not None
    assert client_cert.subject.common_name == "anynet test client"
    assert client_cert.issuer["CN"] == "anynet test CA"
    assert client_cert == pki.client_cert


async def rejected_greeting(port: int, context: TLSContext) -> bytes:
    # In TLS 1.3 the server judges the client's certificate after the client
    # considers the handshake done, so the refusal arrives as an alert on the
    # first read (an error, or end of stream, depending on the event loop).
    try:
        data, _ = await fetch_greeting(port, context)
    except (ssl.SSLError, ConnectionError):
        return b""
    return data


async def test_server_with_an_authority_rejects_a_client_without_certificate(pki):
    async with tls_server(pki.server_context(require_client_certificate=True)) as server:
        assert await rejected_greeting(server.port, pki.client_context()) == b""
    assert server.peer_certificates == []


async def test_server_with_an_authority_rejects_a_client_from_another_ca(pki, stranger):
    client = pki.client_context()
    client.set_certificate(stranger[1], stranger[0])
    async with tls_server(pki.server_context(require_client_certificate=True)) as server:
        assert await rejected_greeting(server.port, client) == b""
    assert server.peer_certificates == []


async def test_self_signed_server_certificate_as_the_authority(stranger):
    key, cert = stranger
    server_context = TLSContext()
    server_context.set_certificate(cert, key)
    client_context = TLSContext()
    client_context.set_authority(cert)
    async with tls_server(server_context) as server:
        data, server_cert = await fetch_greeting(server.port, client_context)
    assert data == GREETING
    assert server_cert == cert


async def test_server_presents_an_intermediate_chain(pki, intermediate_chain):
    leaf_key, chain = intermediate_chain
    server_context = TLSContext()
    server_context.set_certificate_chain(chain, leaf_key)
    async with tls_server(server_context) as server:
        # The client knows only the root: the handshake needs the intermediate.
        data, server_cert = await fetch_greeting(server.port, pki.client_context(), "localhost")
    assert data == GREETING
    assert server_cert == chain[0]


@pytest.mark.parametrize("make_key", [
    lambda: ec.generate_private_key(ec.SECP256R1()),
    ed25519.Ed25519PrivateKey.generate,
], ids=["ec-p256", "ed25519"])
async def test_loaded_non_rsa_keys_serve_tls(make_key):
    pem = make_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key = TLSPrivateKey.parse(pem, TYPE_PEM)
    cert = self_signed(key, "localhost", dns=["localhost"])
    server_context = TLSContext()
    server_context.set_certificate(cert, key)
    client_context = TLSContext()
    client_context.set_authority(cert)
    async with tls_server(server_context) as server:
        data, server_cert = await fetch_greeting(server.port, client_context, "localhost")
    assert data == GREETING
    assert server_cert == cert


async def test_generated_certificates_pass_strict_x509_checks(pki):
    # Newer Pythons verify with VERIFY_X509_STRICT by default: the certificates
    # generate() makes must carry everything that mode demands.
    client = pki.client_context(with_certificate=True)
    client.get(False).verify_flags |= ssl.VERIFY_X509_STRICT
    server_context = pki.server_context(require_client_certificate=True)
    server_context.get(True).verify_flags |= ssl.VERIFY_X509_STRICT
    async with tls_server(server_context) as server:
        data, _ = await fetch_greeting(server.port, client)
    assert data == GREETING
    assert server.peer_certificates == [pki.client_cert]


async def test_peer_certificate_of_a_plain_connection_is_none():
    transports: list[asyncio.BaseTransport] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transports.append(writer.transport)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        assert peer_certificate(writer.transport) is None
        writer.close()
    assert [peer_certificate(transport) for transport in transports] == [None]


# -- TLSContext ------------------------------------------------------------------


def test_client_defaults_are_safe():
    context = TLSContext().get(False)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    # The system's CA store, whatever it holds here, and nothing of ours.
    assert context.cert_store_stats() == ssl.create_default_context().cert_store_stats()


def test_authority_replaces_the_system_store(pki):
    context = pki.client_context().get(False)
    assert context.cert_store_stats()["x509_ca"] == 1
    assert context.get_ca_certs(binary_form=True) == [pki.ca.encode(TYPE_DER)]


def test_server_defaults(pki):
    context = pki.server_context().get(True)
    assert context.verify_mode == ssl.CERT_NONE
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    # No client certificate is trusted unless set_authority says which.
    assert context.cert_store_stats()["x509_ca"] == 0


def test_server_with_authority_requires_client_certificates(pki):
    context = pki.server_context(require_client_certificate=True).get(True)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.get_ca_certs(binary_form=True) == [pki.ca.encode(TYPE_DER)]


def test_disable_verification_turns_off_both_sides(pki):
    context = pki.server_context(require_client_certificate=True)
    context.disable_verification()
    for server in (True, False):
        assert context.get(server).verify_mode == ssl.CERT_NONE
        assert not context.get(server).check_hostname


def test_contexts_are_built_once_and_rebuilt_after_a_change(pki):
    context = pki.client_context()
    client_side = context.get(False)
    assert context.get(False) is client_side
    context.set_certificate(pki.client_cert, pki.client_key)
    assert context.get(False) is not client_side
    server_side = pki.server_context()
    assert server_side.get(True) is server_side.get(True)


def test_building_contexts_leaves_no_file_behind(pki, tmp_path, monkeypatch):
    private_temp = tmp_path / "tmp"
    private_temp.mkdir()
    # Other programs share the system temporary directory; a directory of our
    # own shows exactly what context building leaves behind.
    monkeypatch.setattr(tempfile, "tempdir", str(private_temp))
    assert tempfile.gettempdir() == str(private_temp)

    pki.server_context(require_client_certificate=True).get(True)
    pki.client_context(with_certificate=True).get(False)
    assert list(private_temp.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_identity_passes_through_a_private_file(pki):
    seen = []

    class WatchingContext(ssl.SSLContext):
        def load_cert_chain(self, certfile, keyfile=None, password=None):
            seen.append((
                certfile,
                stat.S_IMODE(os.stat(os.path.dirname(certfile)).st_mode),
                stat.S_IMODE(os.stat(certfile).st_mode),
            ))
            super().load_cert_chain(certfile, keyfile, password)

    identity = pki.server_key.encode(TYPE_PEM) + pki.server_cert.encode(TYPE_PEM)
    _load_identity(WatchingContext(ssl.PROTOCOL_TLS_SERVER), identity)
    [(path, directory_mode, file_mode)] = seen
    assert (directory_mode, file_mode) == (0o700, 0o600)
    assert not os.path.exists(os.path.dirname(path))


def test_server_side_needs_a_certificate(pki):
    with pytest.raises(ValueError, match="certificate"):
        TLSContext().get(True)
    with pytest.raises(ValueError, match="certificate"):
        pki.client_context().get(True)


def test_key_must_match_the_certificate(pki):
    with pytest.raises(ValueError, match="does not match"):
        TLSContext().set_certificate(pki.server_cert, pki.client_key)
    with pytest.raises(ValueError, match="does not match"):
        TLSContext().set_certificate_chain([pki.ca, pki.server_cert], pki.server_key)


def test_context_rejects_bad_arguments(pki):
    context = TLSContext()
    with pytest.raises(ValueError, match="empty"):
        context.set_certificate_chain([], pki.server_key)
    with pytest.raises(TypeError):
        context.set_certificate_chain(pki.server_cert, pki.server_key)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        context.set_certificate(pki.server_cert.encode(TYPE_PEM), pki.server_key)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        context.set_certificate(pki.server_cert, pki.server_key.encode(TYPE_PEM))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        context.set_authority(pki.ca.encode(TYPE_DER))  # type: ignore[arg-type]


def test_authority_must_be_able_to_vouch(pki):
    # An end-entity certificate issued by someone else can never anchor trust.
    with pytest.raises(ValueError, match="CA certificate or a self-signed"):
        TLSContext().set_authority(pki.server_cert)


def test_context_refuses_unsigned_certificates(pki):
    unsigned = TLSCertificate.generate(pki.server_key)
    with pytest.raises(ValueError, match="not signed"):
        TLSContext().set_certificate(unsigned, pki.server_key)
    authority = TLSCertificate.generate(pki.ca_key, authority=True)
    with pytest.raises(ValueError, match="not signed"):
        TLSContext().set_authority(authority)


async def test_context_keeps_the_certificate_as_it_was_set(pki):
    key, cert = pki.issue("first name", ips=["127.0.0.1"])
    original = TLSCertificate.parse(cert.encode(TYPE_DER), TYPE_DER)
    context = TLSContext()
    context.set_certificate(cert, key)
    cert.subject["CN"] = "second name"
    cert.sign(pki.ca_key)
    async with tls_server(context) as server:
        _, server_cert = await fetch_greeting(server.port, pki.client_context())
    assert server_cert == original != cert


# -- X509Name ----------------------------------------------------------------------


@pytest.mark.parametrize("item, attribute", list(NAME_ITEMS.items()))
def test_name_items_and_attributes_are_the_same_field(item, attribute):
    name = X509Name()
    assert name[item] is None
    assert getattr(name, attribute) is None
    value = "NL" if item == "C" else f"value of {item}"
    name[item] = value
    assert getattr(name, attribute) == value
    setattr(name, attribute, value.lower())
    assert name[item] == value.lower()
    name[item] = None
    assert getattr(name, attribute) is None
    assert name == X509Name()


def test_name_fields_survive_signing_and_parsing(pki):
    key = pki.client_key
    cert = TLSCertificate.generate(key)
    fields = {"C": "NL", "ST": "Noord-Holland", "L": "Amsterdam", "O": "Games Inc",
              "OU": "Servers", "CN": "game.example", "E": "ops@game.example"}
    for item, value in fields.items():
        cert.subject[item] = value
    cert.issuer = pki.ca.subject
    cert.sign(pki.ca_key)
    parsed = TLSCertificate.parse(cert.encode(TYPE_PEM), TYPE_PEM)
    assert {item: parsed.subject[item] for item in fields} == fields
    assert parsed.subject == cert.subject
    assert parsed.issuer == pki.ca.subject
    assert parsed.subject.organization_name == "Games Inc"


def test_name_replaces_a_field_where_it_stands():
    name = X509Name()
    name["C"] = "NL"
    name["O"] = "first"
    name["CN"] = "host"
    name["O"] = "second"
    assert repr(name) == "X509Name('CN=host,O=second,C=NL')"  # RFC 4514 lists in reverse


def test_name_assignment_copies(pki):
    cert = TLSCertificate.generate(pki.client_key)
    cert.issuer = pki.ca.subject
    cert.issuer["CN"] = "changed"
    assert pki.ca.subject["CN"] == "anynet test CA"


def test_name_rejects_bad_fields():
    name = X509Name()
    with pytest.raises(KeyError, match="unknown name field"):
        name["XX"]
    with pytest.raises(KeyError):
        name["XX"] = "value"
    with pytest.raises(AttributeError):
        name.surname  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="country_name"):
        name["C"] = "Netherlands"
    with pytest.raises(ValueError, match="common_name"):
        name["CN"] = ""
    with pytest.raises(TypeError):
        name["CN"] = b"bytes"  # type: ignore[assignment]
    assert name == X509Name()


def test_name_keeps_fields_it_has_no_name_for(pki):
    # A certificate made elsewhere, with a name field anynet does not model.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([
        x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "example"),
        x509.NameAttribute(NameOID.COMMON_NAME, "external"),
    ])
    now = datetime.now(timezone.utc)
    foreign = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(7)
        .not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert = TLSCertificate.parse(foreign.public_bytes(serialization.Encoding.DER), TYPE_DER)
    cert.subject["CN"] = "renamed"
    cert.sign(pki.ca_key)
    resigned = x509.load_der_x509_certificate(cert.encode(TYPE_DER))
    assert resigned.subject.rfc4514_string() == "CN=renamed,DC=example"
    assert resigned.serial_number == 7


# -- TLSPrivateKey -------------------------------------------------------------------


def test_key_generation_defaults_to_2048_bit_rsa(pki):
    public_key = pki.server_key.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 2048


@pytest.mark.parametrize("format", [TYPE_DER, TYPE_PEM])
def test_key_round_trips(pki, format, tmp_path):
    encoded = pki.server_key.encode(format)
    assert TLSPrivateKey.parse(encoded, format).encode(format) == encoded
    path = tmp_path / "server.key"
    pki.server_key.save(path, format)
    assert path.read_bytes() == encoded
    loaded = TLSPrivateKey.load(str(path), format)
    assert loaded.public_key() == pki.server_key.public_key()


def test_key_encodings():
    # Parsed from the traditional RSA (PKCS#1) layout, written out as PKCS#8.
    raw = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs1 = raw.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    key = TLSPrivateKey.parse(pkcs1, TYPE_PEM)
    assert key.encode(TYPE_PEM).startswith(b"-----BEGIN PRIVATE KEY-----")
    assert key.public_key() == raw.public_key()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_saved_key_is_private(pki, tmp_path):
    path = tmp_path / "server.key"
    pki.server_key.save(path, TYPE_PEM)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    overwritten = tmp_path / "readable.key"
    overwritten.write_bytes(b"old")
    overwritten.chmod(0o644)
    pki.server_key.save(overwritten, TYPE_DER)
    assert stat.S_IMODE(overwritten.stat().st_mode) == 0o600
    assert overwritten.read_bytes() == pki.server_key.encode(TYPE_DER)


def test_key_rejects_bad_input(pki):
    with pytest.raises(ValueError, match="not a valid PEM private key"):
        TLSPrivateKey.parse(b"garbage", TYPE_PEM)
    with pytest.raises(ValueError, match="not a valid DER private key"):
        TLSPrivateKey.parse(pki.server_key.encode(TYPE_PEM), TYPE_DER)
    with pytest.raises(ValueError, match="not a valid PEM private key"):
        TLSPrivateKey.parse(pki.server_cert.encode(TYPE_PEM), TYPE_PEM)
    with pytest.raises(ValueError, match="TYPE_DER or TYPE_PEM"):
        TLSPrivateKey.parse(pki.server_key.encode(TYPE_PEM), 2)
    with pytest.raises(ValueError, match="TYPE_DER or TYPE_PEM"):
        pki.server_key.encode("pem")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        TLSPrivateKey.parse(pki.server_key.encode(TYPE_PEM).decode(), TYPE_PEM)  # type: ignore[arg-type]


def test_encrypted_key_is_refused(pki):
    encrypted = pki.server_key._key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(ValueError, match="not a valid PEM private key"):
        TLSPrivateKey.parse(encrypted, TYPE_PEM)


def test_key_that_cannot_sign_is_refused():
    exchange_only = x25519.X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="unsupported private key type"):
        TLSPrivateKey.parse(exchange_only, TYPE_DER)


def test_key_size_is_checked():
    with pytest.raises(ValueError, match="at least 2048"):
        TLSPrivateKey.generate(1024)
    with pytest.raises(TypeError):
        TLSPrivateKey.generate("2048")  # type: ignore[arg-type]


# -- TLSCertificate ------------------------------------------------------------------


def test_generated_certificate_defaults(pki):
    before = datetime.now(timezone.utc)
    cert = TLSCertificate.generate(pki.client_key)
    assert 0 < cert.serial_number < 2**159
    assert cert.serial_number != TLSCertificate.generate(pki.client_key).serial_number
    assert cert.not_valid_before <= before - timedelta(hours=23)
    assert cert.not_valid_after - cert.not_valid_before == DEFAULT_VALIDITY + timedelta(days=1)
    assert not cert.is_authority
    assert pki.ca.is_authority
    assert cert.public_key() == pki.client_key.public_key()
    assert cert.subject == X509Name() and cert.issuer == X509Name()


def test_server_certificate_fields(pki):
    cert = pki.server_cert
    assert cert.subject.common_name == "localhost"
    assert cert.issuer == pki.ca.subject
    assert cert.dns_names == ["localhost"]
    assert cert.ip_addresses == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert cert.not_valid_before.tzinfo is not None


def test_validity_period_is_settable(pki):
    cert = TLSCertificate.generate(pki.client_key)
    cert.subject["CN"] = "short-lived"
    cert.issuer = pki.ca.subject
    start = datetime(2030, 1, 1, 12, 0, 0, 999)  # naive means UTC; fractions are dropped
    cert.not_valid_before = start
    cert.not_valid_after = start + timedelta(hours=1)
    cert.serial_number = 42
    cert.sign(pki.ca_key)
    parsed = TLSCertificate.parse(cert.encode(TYPE_DER), TYPE_DER)
    assert parsed.not_valid_before == datetime(2030, 1, 1, 12, tzinfo=timezone.utc)
    assert parsed.not_valid_after == datetime(2030, 1, 1, 13, tzinfo=timezone.utc)
    assert parsed.serial_number == 42


def test_subject_alternative_names_accumulate(pki):
    cert = TLSCertificate.generate(pki.client_key)
    cert.add_subject_alternative_names(dns=["a.example"], ips=["10.0.0.1"])
    cert.add_subject_alternative_names(dns=["b.example", "a.example"], ips=[ipaddress.ip_address("::1")])
    assert cert.dns_names == ["a.example", "b.example"]
    assert cert.ip_addresses == [ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("::1")]


@pytest.mark.parametrize("dns, ips", [
    (["bücher.example"], []),
    ([""], []),
    ([], ["localhost"]),
    ([], ["300.1.2.3"]),
])
def test_subject_alternative_names_are_checked(pki, dns, ips):
    cert = TLSCertificate.generate(pki.client_key)
    with pytest.raises(ValueError, match="invalid"):
        cert.add_subject_alternative_names(dns=dns, ips=ips)
    with pytest.raises(TypeError):
        cert.add_subject_alternative_names(dns="localhost")
    assert cert.dns_names == [] and cert.ip_addresses == []


@pytest.mark.parametrize("format", [TYPE_DER, TYPE_PEM])
def test_certificate_round_trips(pki, format, tmp_path):
    encoded = pki.server_cert.encode(format)
    parsed = TLSCertificate.parse(encoded, format)
    assert parsed.encode(format) == encoded
    assert parsed == pki.server_cert
    path = tmp_path / "server.crt"
    pki.server_cert.save(str(path), format)
    assert TLSCertificate.load(path, format) == pki.server_cert


def test_fingerprint_is_sha256_of_der(pki):
    assert pki.server_cert.fingerprint() == hashlib.sha256(pki.server_cert.encode(TYPE_DER)).digest()
    assert pki.server_cert.fingerprint() != pki.client_cert.fingerprint()


def test_equality_and_hash_follow_the_encoding(pki):
    copy = TLSCertificate.parse(pki.server_cert.encode(TYPE_PEM), TYPE_PEM)
    assert copy == pki.server_cert and copy is not pki.server_cert
    assert hash(copy) == hash(pki.server_cert)
    assert len({copy, pki.server_cert, pki.client_cert}) == 2
    assert pki.server_cert != pki.client_cert
    assert pki.server_cert != pki.server_cert.encode(TYPE_DER)
    unsigned = TLSCertificate.generate(pki.server_key)
    assert unsigned == unsigned
    assert unsigned != TLSCertificate.generate(pki.server_key)
    assert unsigned != pki.server_cert


def test_changed_certificate_must_be_signed_again(pki):
    cert = TLSCertificate.parse(pki.client_cert.encode(TYPE_DER), TYPE_DER)
    cert.subject["O"] = "changed"
    with pytest.raises(ValueError, match="sign\\(\\) again"):
        cert.encode(TYPE_PEM)
    assert cert != pki.client_cert
    cert.sign(pki.ca_key)
    assert TLSCertificate.parse(cert.encode(TYPE_PEM), TYPE_PEM).subject["O"] == "changed"


def test_unsigned_certificate_cannot_be_encoded(pki):
    cert = TLSCertificate.generate(pki.client_key)
    with pytest.raises(ValueError, match="not signed"):
        cert.encode(TYPE_DER)
    with pytest.raises(ValueError, match="not signed"):
        cert.fingerprint()


def test_signing_checks_its_input(pki):
    cert = TLSCertificate.generate(pki.client_key)
    with pytest.raises(ValueError, match="issuer"):
        cert.sign(pki.ca_key)
    cert.issuer = pki.ca.subject
    with pytest.raises(ValueError, match="unsupported signature hash"):
        cert.sign(pki.ca_key, "md5")
    with pytest.raises(TypeError):
        cert.sign(pki.ca_key.encode(TYPE_PEM))  # type: ignore[arg-type]
    cert.not_valid_after = cert.not_valid_before
    with pytest.raises(ValueError, match="later than"):
        cert.sign(pki.ca_key)
    with pytest.raises(ValueError, match="159 bits"):
        cert.serial_number = 0
    with pytest.raises(TypeError):
        cert.not_valid_before = "2030-01-01"  # type: ignore[assignment]


def test_other_signature_hashes(pki):
    cert = TLSCertificate.generate(pki.client_key)
    cert.subject["CN"] = cert.issuer["CN"] = "sha384"
    cert.sign(pki.client_key, "sha384")
    signed = x509.load_der_x509_certificate(cert.encode(TYPE_DER))
    assert isinstance(signed.signature_hash_algorithm, hashes.SHA384)


def test_certificate_rejects_bad_input(pki):
    with pytest.raises(ValueError, match="not a valid DER certificate"):
        TLSCertificate.parse(b"\x30\x03\x02\x01\x00", TYPE_DER)
    with pytest.raises(ValueError, match="not a valid PEM certificate"):
        TLSCertificate.parse(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", TYPE_PEM)
    with pytest.raises(ValueError, match="not a valid DER certificate"):
        TLSCertificate.parse(pki.server_cert.encode(TYPE_PEM), TYPE_DER)
    with pytest.raises(ValueError, match="not a valid PEM certificate"):
        TLSCertificate.parse(pki.server_key.encode(TYPE_PEM), TYPE_PEM)
    with pytest.raises(ValueError, match="TYPE_DER or TYPE_PEM"):
        TLSCertificate.parse(pki.server_cert.encode(TYPE_DER), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TYPE_DER or TYPE_PEM"):
        pki.server_cert.encode(5)


# -- certificate chains --------------------------------------------------------------


def test_chain_file_holds_every_certificate(pki, intermediate_chain, tmp_path):
    _, chain = intermediate_chain
    path = tmp_path / "chain.pem"
    path.write_bytes(b"".join(cert.encode(TYPE_PEM) for cert in chain + [pki.ca]))
    assert load_certificate_chain(str(path)) == chain + [pki.ca]


def test_chain_file_tolerates_text_around_certificates(pki, tmp_path):
    path = tmp_path / "chain.pem"
    path.write_bytes(b"subject=CN=localhost\n" + pki.server_cert.encode(TYPE_PEM)
                     + b"\n# the CA\n" + pki.ca.encode(TYPE_PEM))
    assert load_certificate_chain(path) == [pki.server_cert, pki.ca]


@pytest.mark.parametrize("content", [b"", b"no certificates here", b"\x00\x01\x02"])
def test_chain_file_without_certificates_is_refused(tmp_path, content):
    path = tmp_path / "chain.pem"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a valid PEM certificate chain"):
        load_certificate_chain(path)
