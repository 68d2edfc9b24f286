"""X509Name: the subject or issuer name of a certificate, editable in place."""

from __future__ import annotations

from typing import overload

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

# Short item keys (as in "CN=localhost") and the attribute each one stands for.
NAME_ITEMS = {
    "C": "country_name",
    "ST": "state_or_province_name",
    "L": "locality_name",
    "O": "organization_name",
    "OU": "organizational_unit_name",
    "CN": "common_name",
    "E": "email_address",
}


class _NameField:
    """One attribute of an X509Name, read and written through the name's RDNs."""

    def __init__(self, oid: ObjectIdentifier) -> None:
        self._oid = oid
        self._attribute = ""

    def __set_name__(self, owner: type, attribute: str) -> None:
        self._attribute = attribute

    @overload
    def __get__(self, name: None, owner: type) -> _NameField: ...

    @overload
    def __get__(self, name: X509Name, owner: type) -> str | None: ...

    def __get__(self, name: X509Name | None, owner: type) -> _NameField | str | None:
        if name is None:
            return self
        return name._get(self._oid)

    def __set__(self, name: X509Name, value: str | None) -> None:
        name._set(self._oid, self._attribute, value)


class X509Name:
    """A distinguished name, such as the subject or the issuer of a certificate.

    Every field can be read and written as an item (``name["CN"]``) or as an
    attribute (``name.common_name``); see ``NAME_ITEMS`` for the pairs. A field
    that is absent reads as ``None``, and assigning ``None`` removes it. Fields
    this class has no name for (found in certificates made elsewhere) are kept
    as they are, in their original order.
    """

    __slots__ = ("_rdns",)

    country_name = _NameField(NameOID.COUNTRY_NAME)
    state_or_province_name = _NameField(NameOID.STATE_OR_PROVINCE_NAME)
    locality_name = _NameField(NameOID.LOCALITY_NAME)
    organization_name = _NameField(NameOID.ORGANIZATION_NAME)
    organizational_unit_name = _NameField(NameOID.ORGANIZATIONAL_UNIT_NAME)
    common_name = _NameField(NameOID.COMMON_NAME)
    email_address = _NameField(NameOID.EMAIL_ADDRESS)

    def __init__(self) -> None:
        """Create an empty name."""
        self._rdns: list[x509.RelativeDistinguishedName] = []

    @classmethod
    def _from_x509(cls, name: x509.Name) -> X509Name:
        result = cls()
        result._rdns = list(name.rdns)
        return result

    def _to_x509(self) -> x509.Name:
        return x509.Name(self._rdns)

    def copy(self) -> X509Name:
        """Return an independent copy of this name."""
        return X509Name._from_x509(self._to_x509())

    def __getitem__(self, key: str) -> str | None:
        return getattr(self, _attribute_for(key))  # type: ignore[no-any-return]

    def __setitem__(self, key: str, value: str | None) -> None:
        setattr(self, _attribute_for(key), value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, X509Name):
            return NotImplemented
        return self._to_x509() == other._to_x509()

    # Names are edited in place, so they cannot be dictionary keys.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"X509Name({self._to_x509().rfc4514_string()!r})"

    def _get(self, oid: ObjectIdentifier) -> str | None:
        for rdn in self._rdns:
            for attribute in rdn:
                if attribute.oid == oid:
                    return str(attribute.value)
        return None

    def _set(self, oid: ObjectIdentifier, field: str, value: str | None) -> None:
        new_attribute = None
        if value is not None:
            if not isinstance(value, str):
                raise TypeError(f"{field} must be a str or None, not {type(value).__name__}")
            try:
                new_attribute = x509.NameAttribute(oid, value)
            except ValueError as exc:
                raise ValueError(f"invalid {field} {value!r}: {exc}") from None

        # The first occurrence is replaced where it stands, so the order of the
        # name (which is part of its identity) changes as little as possible;
        # any further occurrences go, so the field has exactly the new value.
        rdns = []
        for rdn in self._rdns:
            attributes = []
            for attribute in rdn:
                if attribute.oid != oid:
                    attributes.append(attribute)
                elif new_attribute is not None:
                    attributes.append(new_attribute)
                    new_attribute = None
            if attributes:
                rdns.append(x509.RelativeDistinguishedName(attributes))
        if new_attribute is not None:
            rdns.append(x509.RelativeDistinguishedName([new_attribute]))
        self._rdns = rdns


def _attribute_for(key: str) -> str:
    try:
        return NAME_ITEMS[key]
    except KeyError:
        raise KeyError(f"unknown name field {key!r}; expected one of {', '.join(NAME_ITEMS)}") from None
