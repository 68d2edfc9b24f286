"""Keys and certificates: the X.509 model behind ``anynet.tls``, on ``cryptography``."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, TypeVar, Union

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID

from anynet._x509_name import X509Name

TYPE_DER = 0
"""Binary ASN.1 encoding of a certificate or key."""
TYPE_PEM = 1
"""Base64 text encoding with ``-----BEGIN ...-----`` lines."""

_ENCODINGS = {TYPE_DER: serialization.Encoding.DER, TYPE_PEM: serialization.Encoding.PEM}
_FORMAT_NAMES = {TYPE_DER: "DER", TYPE_PEM: "PEM"}

# Weaker digests (SHA-1, MD5) are refused: no current TLS library accepts them.
_SignatureHash = Union[hashes.SHA224, hashes.SHA256, hashes.SHA384, hashes.SHA512]
_SIGNATURE_HASHES: dict[str, Callable[[], _SignatureHash]] = {
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

# Python's default ciphers include "@SECLEVEL=2", which refuses RSA keys
# shorter than this in a TLS handshake: a smaller key would only fail later.
MINIMUM_RSA_KEY_SIZE = 2048

DEFAULT_VALIDITY = timedelta(days=365)
"""How long a certificate made by ``TLSCertificate.generate`` is valid."""
# Backdating the start tolerates clocks that run behind on the peer's side.
_BACKDATE = timedelta(days=1)

# The private key types that can sign a certificate (and so a TLS handshake).
_SIGNING_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
_Extension = TypeVar("_Extension", bound=x509.ExtensionType)


def _encoding(format: int) -> serialization.Encoding:
    try:
        return _ENCODINGS[format]
    except (KeyError, TypeError):
        raise ValueError(f"format must be TYPE_DER or TYPE_PEM, not {format!r}") from None


def _require_bytes(data: object, what: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be bytes, not {type(data).__name__}")
    return bytes(data)


def _read_file(filename: str | os.PathLike[str]) -> bytes:
    with open(filename, "rb") as file:
        return file.read()


def _write_file(filename: str | os.PathLike[str], data: bytes) -> None:
    with open(filename, "wb") as file:
        file.write(data)


def _utc(moment: datetime, field: str) -> datetime:
    if not isinstance(moment, datetime):
        raise TypeError(f"{field} must be a datetime, not {type(moment).__name__}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    # Certificates store whole seconds; dropping the rest keeps what we hold
    # equal to what a signed certificate reads back.
    return moment.astimezone(timezone.utc).replace(microsecond=0)


class TLSPrivateKey:
    """A private key: RSA when generated here; any key that can sign when loaded.

    Make one with ``generate``, ``parse`` or ``load``, not with the constructor.
    """

    def __init__(self, key: CertificateIssuerPrivateKeyTypes) -> None:
        self._key = key

    @classmethod
    def generate(cls, size: int = 2048) -> TLSPrivateKey:
        """Generate a fresh RSA key of ``size`` bits (at least 2048)."""
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"size must be an int, not {type(size).__name__}")
        if size < MINIMUM_RSA_KEY_SIZE:
            raise ValueError(f"RSA keys must have at least {MINIMUM_RSA_KEY_SIZE} bits, not {size}")
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=size))

    @classmethod
    def parse(cls, data: bytes, format: int) -> TLSPrivateKey:
        """Read an unencrypted key (PKCS#8, or PKCS#1 for RSA) in DER or PEM format."""
        encoding = _encoding(format)
        data = _require_bytes(data, "data")
        try:
            if encoding is serialization.Encoding.DER:
                key = serialization.load_der_private_key(data, password=None)
            else:
                key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            # TypeError is how cryptography reports an encrypted key.
            raise ValueError(f"not a valid {_FORMAT_NAMES[format]} private key: {exc}") from None
        if not isinstance(key, _SIGNING_KEY_TYPES):
            raise ValueError(f"unsupported private key type: {type(key).__name__}")
        return cls(key)

    @classmethod
    def load(cls, filename: str | os.PathLike[str], format: int) -> TLSPrivateKey:
        """Read a key from a file; see ``parse``."""
        _encoding(format)
        return cls.parse(_read_file(filename), format)

    def encode(self, format: int) -> bytes:
        """Encode the key as unencrypted PKCS#8 in DER or PEM format."""
        return self._key.private_bytes(
            _encoding(format), serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def save(self, filename: str | os.PathLike[str], format: int) -> None:
        """Write the key to a file (readable by its owner only); see ``encode``."""
        data = self.encode(format)
        # Private from the moment it exists, so the key is never readable by
        # others; a file that already existed is made private before the write.
        fd = os.open(filename, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)
        with open(fd, "wb") as file:
            file.write(data)

    def public_key(self) -> CertificatePublicKeyTypes:
        """The matching public key, as a ``cryptography`` public key object."""
        return self._key.public_key()

    def __repr__(self) -> str:
        return f"<TLSPrivateKey {type(self._key).__name__}>"


class TLSCertificate:
    """An X.509 certificate, either signed or being prepared for signing.

    Make one with ``generate`` (then fill in ``subject`` and ``issuer`` and call
    ``sign``), ``parse`` or ``load``; not with the constructor. Every field can
    be changed; the certificate must then be signed again before it is encoded.

    Two signed certificates are equal when their DER encodings are equal; an
    unsigned one is equal only to itself. Do not change a certificate while it
    is a key in a dictionary or a member of a set.
    """

    def __init__(
        self,
        *,
        public_key: CertificatePublicKeyTypes,
        subject: X509Name,
        issuer: X509Name,
        serial_number: int,
        not_valid_before: datetime,
        not_valid_after: datetime,
        extensions: list[x509.Extension[x509.ExtensionType]],
        signed: x509.Certificate | None,
    ) -> None:
        self._public_key = public_key
        self._subject = subject
        self._issuer = issuer
        self._serial_number = serial_number
        self._not_valid_before = not_valid_before
        self._not_valid_after = not_valid_after
        self._extensions = extensions
        self._signed = signed

    @classmethod
    def generate(cls, key: TLSPrivateKey, *, authority: bool = False) -> TLSCertificate:
        """Prepare a new certificate for ``key``'s public key.

        The certificate gets a random serial number and is valid from one day
        ago (to tolerate clock skew) for ``DEFAULT_VALIDITY``. With
        ``authority=True`` it is a CA certificate, able to sign others;
        otherwise it is an end-entity certificate usable by TLS servers and
        clients. Fill in ``subject`` and ``issuer`` (and, for a server, its
        names with ``add_subject_alternative_names``), then call ``sign``.
        """
        if not isinstance(key, TLSPrivateKey):
            raise TypeError(f"key must be a TLSPrivateKey, not {type(key).__name__}")
        public_key = key.public_key()
        now = datetime.now(timezone.utc).replace(microsecond=0)
        certificate = cls(
            public_key=public_key,
            subject=X509Name(),
            issuer=X509Name(),
            serial_number=x509.random_serial_number(),
            not_valid_before=now - _BACKDATE,
            not_valid_after=now + DEFAULT_VALIDITY,
            extensions=[],
            signed=None,
        )
        certificate._set_extension(x509.BasicConstraints(ca=authority, path_length=None), critical=True)
        certificate._set_extension(_key_usage(public_key, authority), critical=True)
        if not authority:
            # Without an extended key usage OpenSSL accepts any purpose; naming
            # both keeps one certificate usable on either side of a connection.
            usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            certificate._set_extension(x509.ExtendedKeyUsage(usages), critical=False)
        certificate._set_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        return certificate

    @classmethod
    def parse(cls, data: bytes, format: int) -> TLSCertificate:
        """Read a certificate in DER or PEM format."""
        encoding = _encoding(format)
        data = _require_bytes(data, "data")
        try:
            if encoding is serialization.Encoding.DER:
                certificate = x509.load_der_x509_certificate(data)
            else:
                certificate = x509.load_pem_x509_certificate(data)
            return cls._from_x509(certificate)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"not a valid {_FORMAT_NAMES[format]} certificate: {exc}") from None

    @classmethod
    def load(cls, filename: str | os.PathLike[str], format: int) -> TLSCertificate:
        """Read a certificate from a file; see ``parse``."""
        _encoding(format)
        return cls.parse(_read_file(filename), format)

    @classmethod
    def _from_x509(cls, certificate: x509.Certificate) -> TLSCertificate:
        # Reading every part now makes a malformed certificate fail here, in
        # parse, rather than later in whatever code first touches the part.
        return cls(
            public_key=certificate.public_key(),
            subject=X509Name._from_x509(certificate.subject),
            issuer=X509Name._from_x509(certificate.issuer),
            serial_number=certificate.serial_number,
            not_valid_before=certificate.not_valid_before_utc,
            not_valid_after=certificate.not_valid_after_utc,
            extensions=list(certificate.extensions),
            signed=certificate,
        )

    @property
    def subject(self) -> X509Name:
        """The name of the certificate's owner. Assigning copies the given name."""
        return self._subject

    @subject.setter
    def subject(self, name: X509Name) -> None:
        self._subject = _copy_name(name, "subject")

    @property
    def issuer(self) -> X509Name:
        """The name of the authority that signs the certificate (the CA's subject,
        or the certificate's own subject when it is self-signed). Assigning
        copies the given name."""
        return self._issuer

    @issuer.setter
    def issuer(self, name: X509Name) -> None:
        self._issuer = _copy_name(name, "issuer")

    @property
    def serial_number(self) -> int:
        """The serial number: positive, at most 159 bits, unique per issuer."""
        return self._serial_number

    @serial_number.setter
    def serial_number(self, number: int) -> None:
        if not isinstance(number, int) or isinstance(number, bool):
            raise TypeError(f"serial_number must be an int, not {type(number).__name__}")
        if not 0 < number < 2**159:
            raise ValueError("serial_number must be positive and at most 159 bits long")
        self._serial_number = number

    @property
    def not_valid_before(self) -> datetime:
        """Start of the validity period (UTC; a naive datetime is taken as UTC)."""
        return self._not_valid_before

    @not_valid_before.setter
    def not_valid_before(self, moment: datetime) -> None:
        self._not_valid_before = _utc(moment, "not_valid_before")

    @property
    def not_valid_after(self) -> datetime:
        """End of the validity period (UTC; a naive datetime is taken as UTC)."""
        return self._not_valid_after

    @not_valid_after.setter
    def not_valid_after(self, moment: datetime) -> None:
        self._not_valid_after = _utc(moment, "not_valid_after")

    @property
    def is_authority(self) -> bool:
        """Whether this is a CA certificate (basic constraints say so)."""
        constraints = self._extension(x509.BasicConstraints)
        return constraints is not None and constraints.ca

    @property
    def dns_names(self) -> list[str]:
        """The DNS names among the subject alternative names."""
        names = self._extension(x509.SubjectAlternativeName)
        return [] if names is None else names.get_values_for_type(x509.DNSName)

    @property
    def ip_addresses(self) -> list[IPAddress]:
        """The IP addresses among the subject alternative names."""
        names = self._extension(x509.SubjectAlternativeName)
        if names is None:
            return []
        return [address for address in names.get_values_for_type(x509.IPAddress)
                if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address))]

    def add_subject_alternative_names(
        self, dns: Iterable[str] = (), ips: Iterable[str | IPAddress] = ()
    ) -> None:
        """Add host names and IP addresses the certificate is valid for.

        TLS clients check the host they connect to against these names (the
        subject's common name is not consulted), so a server certificate needs
        them: for example ``dns=["localhost"], ips=["127.0.0.1", "::1"]``.
        Internationalised names must be given in their ASCII ("xn--") form.
        """
        if isinstance(dns, str) or isinstance(ips, str):
            raise TypeError("dns and ips must be lists of names, not a single string")
        existing = self._extension(x509.SubjectAlternativeName)
        names: list[x509.GeneralName] = [] if existing is None else list(existing)
        for name in dns:
            if not isinstance(name, str) or not name:
                raise ValueError(f"invalid DNS name: {name!r}")
            try:
                _append_new(names, x509.DNSName(name))
            except ValueError as exc:
                raise ValueError(f"invalid DNS name {name!r}: {exc}") from None
        for address in ips:
            try:
                _append_new(names, x509.IPAddress(ipaddress.ip_address(address)))
            except ValueError:
                raise ValueError(f"invalid IP address: {address!r}") from None
        self._set_extension(x509.SubjectAlternativeName(names), critical=False)

    def public_key(self) -> CertificatePublicKeyTypes:
        """The certificate's public key, as a ``cryptography`` public key object.

        (The original anynet returned RSA public numbers; call
        ``.public_numbers()`` on an RSA key for those.)
        """
        return self._public_key

    def sign(self, key: TLSPrivateKey, alg: str = "sha256") -> None:
        """Sign the certificate with the issuer's key, using hash ``alg``.

        For a self-signed certificate that is the certificate's own key. The
        hash is one of sha224, sha256, sha384 or sha512 (Ed25519 and Ed448
        keys ignore it, as their signatures fix their own hash).
        """
        if not isinstance(key, TLSPrivateKey):
            raise TypeError(f"key must be a TLSPrivateKey, not {type(key).__name__}")
        if alg not in _SIGNATURE_HASHES:
            raise ValueError(f"unsupported signature hash {alg!r}; use one of {', '.join(_SIGNATURE_HASHES)}")
        if not self._issuer._rdns:
            raise ValueError("fill in the issuer before signing (for a self-signed certificate, the subject)")
        if self._not_valid_after <= self._not_valid_before:
            raise ValueError("not_valid_after must be later than not_valid_before")

        signing_key = key._key
        # Lets verifiers pick the right issuer among several with one name.
        identifier = x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key())
        self._set_extension(identifier, critical=False)

        builder = (
            x509.CertificateBuilder()
            .subject_name(self._subject._to_x509())
            .issuer_name(self._issuer._to_x509())
            .public_key(self._public_key)
            .serial_number(self._serial_number)
            .not_valid_before(self._not_valid_before)
            .not_valid_after(self._not_valid_after)
        )
        for extension in self._extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        signs_own_hash = isinstance(signing_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
        algorithm = None if signs_own_hash else _SIGNATURE_HASHES[alg]()
        try:
            self._signed = builder.sign(signing_key, algorithm)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"cannot sign the certificate: {exc}") from None

    def encode(self, format: int) -> bytes:
        """Encode the signed certificate in DER or PEM format.

        Raises ``ValueError`` if the certificate was never signed or was
        changed after its last signature.
        """
        return self._current().public_bytes(_encoding(format))

    def save(self, filename: str | os.PathLike[str], format: int) -> None:
        """Write the signed certificate to a file; see ``encode``."""
        _write_file(filename, self.encode(format))

    def fingerprint(self) -> bytes:
        """The SHA-256 digest of the DER encoding (32 bytes)."""
        return hashlib.sha256(self.encode(TYPE_DER)).digest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TLSCertificate):
            return NotImplemented
        if self is other:
            return True
        mine, theirs = self._signed_or_none(), other._signed_or_none()
        return mine is not None and theirs is not None and mine == theirs

    def __hash__(self) -> int:
        signed = self._signed_or_none()
        return id(self) if signed is None else hash(signed.public_bytes(serialization.Encoding.DER))

    def __repr__(self) -> str:
        state = "signed" if self._signed_or_none() is not None else "unsigned"
        return f"<TLSCertificate {state} subject={self._subject._to_x509().rfc4514_string()!r}>"

    def _current(self) -> x509.Certificate:
        signed = self._signed_or_none()
        if signed is None:
            if self._signed is None:
                raise ValueError("the certificate is not signed yet; call sign() first")
            raise ValueError("the certificate changed after it was signed; call sign() again")
        return signed

    def _signed_or_none(self) -> x509.Certificate | None:
        """The signed certificate, if it still matches every field we hold."""
        signed = self._signed
        if signed is None:
            return None
        unchanged = (
            signed.subject == self._subject._to_x509()
            and signed.issuer == self._issuer._to_x509()
            and signed.serial_number == self._serial_number
            and signed.not_valid_before_utc == self._not_valid_before
            and signed.not_valid_after_utc == self._not_valid_after
            and list(signed.extensions) == self._extensions
            and signed.public_key() == self._public_key
        )
        return signed if unchanged else None

    def _extension(self, kind: type[_Extension]) -> _Extension | None:
        for extension in self._extensions:
            if isinstance(extension.value, kind):
                return extension.value
        return None

    def _set_extension(self, value: x509.ExtensionType, critical: bool) -> None:
        extension = x509.Extension(value.oid, critical, value)
        for index, existing in enumerate(self._extensions):
            if existing.oid == value.oid:
                self._extensions[index] = extension
                return
        self._extensions.append(extension)


def _key_usage(public_key: CertificatePublicKeyTypes, authority: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        # Only RSA keys can encrypt a TLS 1.2 key exchange.
        key_encipherment=not authority and isinstance(public_key, rsa.RSAPublicKey),
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=authority,
        crl_sign=authority,
        encipher_only=False,
        decipher_only=False,
    )


def _append_new(names: list[x509.GeneralName], name: x509.GeneralName) -> None:
    if name not in names:
        names.append(name)


def _copy_name(name: X509Name, field: str) -> X509Name:
    if not isinstance(name, X509Name):
        raise TypeError(f"{field} must be an X509Name, not {type(name).__name__}")
    return name.copy()


def load_certificate_chain(filename: str | os.PathLike[str]) -> list[TLSCertificate]:
    """Read every certificate of a PEM file, in file order (usually leaf first)."""
    data = _read_file(filename)
    try:
        certificates = x509.load_pem_x509_certificates(data)
        return [TLSCertificate._from_x509(certificate) for certificate in certificates]
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a valid PEM certificate chain: {exc}") from None
