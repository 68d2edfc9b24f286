"""TLS for anynet: keys, X.509 certificates and ready-made ``ssl`` contexts.

A self-signed certificate for a test server, and a client that trusts it::

    key = TLSPrivateKey.generate()
    cert = TLSCertificate.generate(key)
    cert.subject["CN"] = cert.issuer["CN"] = "localhost"
    cert.add_subject_alternative_names(dns=["localhost"], ips=["127.0.0.1"])
    cert.sign(key)

    server = TLSContext()
    server.set_certificate(cert, key)
    client = TLSContext()
    client.set_authority(cert)

Keys and certificates are built on the ``cryptography`` package; a
``TLSContext`` turns them into standard-library ``ssl.SSLContext`` objects.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile
from collections.abc import Sequence

from anynet._x509 import (
    DEFAULT_VALIDITY,
    MINIMUM_RSA_KEY_SIZE,
    TYPE_DER,
    TYPE_PEM,
    TLSCertificate,
    TLSPrivateKey,
    load_certificate_chain,
)
from anynet._x509_name import NAME_ITEMS, X509Name

__all__ = [
    "DEFAULT_VALIDITY",
    "MINIMUM_RSA_KEY_SIZE",
    "NAME_ITEMS",
    "TYPE_DER",
    "TYPE_PEM",
    "TLSCertificate",
    "TLSContext",
    "TLSPrivateKey",
    "X509Name",
    "load_certificate_chain",
    "peer_certificate",
]


class TLSContext:
    """The TLS configuration of a client or a server.

    Defaults: TLS 1.2 or later; a client verifies the server's certificate
    against the system's CA store and checks the host name; a server asks for
    no client certificate (and needs ``set_certificate`` before ``get(True)``).
    """

    def __init__(self) -> None:
        # The private key followed by the chain, in PEM: what ssl loads.
        self._identity_pem: bytes | None = None
        self._authority_der: bytes | None = None
        self._verification_enabled = True
        self._contexts: dict[bool, ssl.SSLContext] = {}

    def set_certificate(self, cert: TLSCertificate, key: TLSPrivateKey) -> None:
        """Present ``cert`` (with its private ``key``) to the peer."""
        self.set_certificate_chain([cert], key)

    def set_certificate_chain(self, certs: Sequence[TLSCertificate], key: TLSPrivateKey) -> None:
        """Present a chain to the peer: the own certificate first, then the
        intermediate CA certificates that lead to a root the peer trusts.

        Raises ``ValueError`` if ``key`` does not belong to the first
        certificate, or if a certificate is not signed.
        """
        if isinstance(certs, TLSCertificate) or not isinstance(certs, Sequence):
            raise TypeError("certs must be a list of TLSCertificate")
        if not certs:
            raise ValueError("the certificate chain is empty")
        for cert in certs:
            if not isinstance(cert, TLSCertificate):
                raise TypeError(f"certs must hold TLSCertificate objects, not {type(cert).__name__}")
        if not isinstance(key, TLSPrivateKey):
            raise TypeError(f"key must be a TLSPrivateKey, not {type(key).__name__}")
        if certs[0].public_key() != key.public_key():
            raise ValueError("the private key does not match the certificate")
        # Encoded now, so later changes to the objects cannot slip into a
        # context built afterwards, and an unsigned certificate fails here.
        chain_pem = b"".join(cert.encode(TYPE_PEM) for cert in certs)
        self._identity_pem = key.encode(TYPE_PEM) + chain_pem
        self._contexts.clear()

    def set_authority(self, cert: TLSCertificate) -> None:
        """Trust only ``cert`` (instead of the system's CA store).

        ``cert`` is a CA certificate, or a self-signed certificate that is then
        the only one trusted. On a server this also makes the server require a
        client certificate and verify it against ``cert``.
        """
        if not isinstance(cert, TLSCertificate):
            raise TypeError(f"cert must be a TLSCertificate, not {type(cert).__name__}")
        if not cert.is_authority and cert.subject != cert.issuer:
            raise ValueError("the authority must be a CA certificate or a self-signed certificate")
        self._authority_der = cert.encode(TYPE_DER)
        self._contexts.clear()

    def disable_verification(self) -> None:
        """Accept any peer certificate, on both sides. This wins over
        ``set_authority``, and leaves the connection open to impersonation:
        for tests and closed networks only."""
        self._verification_enabled = False
        self._contexts.clear()

    def get(self, server: bool) -> ssl.SSLContext:
        """The ``ssl.SSLContext`` for the server side (``True``) or the client side.

        Each side's context is built once and shared by every connection until
        a setter changes the configuration; do not modify it. Raises
        ``ValueError`` for a server side without a certificate.
        """
        server = bool(server)
        context = self._contexts.get(server)
        if context is None:
            context = self._build_server() if server else self._build_client()
            self._contexts[server] = context
        return context

    def _build_server(self) -> ssl.SSLContext:
        if self._identity_pem is None:
            raise ValueError("a server needs a certificate: call set_certificate() first")
        # Not create_default_context(CLIENT_AUTH): that would load the system's
        # CA store, and a server must trust no client certificate by default.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _load_identity(context, self._identity_pem)
        if self._authority_der is not None and self._verification_enabled:
            context.load_verify_locations(cadata=self._authority_der)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def _build_client(self) -> ssl.SSLContext:
        if self._verification_enabled:
            # Python's own client defaults (and their future tightening); with
            # cadata the system store is left out, so only the authority counts.
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self._authority_der)
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self._identity_pem is not None:
            _load_identity(context, self._identity_pem)
        return context


def _load_identity(context: ssl.SSLContext, identity_pem: bytes) -> None:
    # ssl reads certificates and keys only from files. The key touches the
    # disk only inside a fresh directory that only we may enter, in a file
    # only we may read, and both are gone when this block ends, however it ends.
    with tempfile.TemporaryDirectory(prefix="anynet-") as directory:
        path = os.path.join(directory, "identity.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as file:
            file.write(identity_pem)
        try:
            context.load_cert_chain(path)
        except ssl.SSLError as exc:
            raise ValueError(f"ssl refused the certificate or key: {exc}") from None


def peer_certificate(transport: asyncio.BaseTransport) -> TLSCertificate | None:
    """The certificate the peer of ``transport`` presented, if any.

    ``None`` for a connection without TLS, or when the peer sent no
    certificate (a client is only asked for one by a server with an authority).
    """
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    return TLSCertificate.parse(der, TYPE_DER)
