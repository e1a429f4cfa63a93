"""Exceptions raised by the ``certs`` package.

Hierarchy::

    CertError                  anything the PKI refuses or cannot do
    ├── CsrError               a CSR is malformed, badly signed or has the wrong key type
    ├── PkiExistsError         init would overwrite an existing PKI
    ├── PinMismatchError       a fetched CA does not match the pinned SHA-256 fingerprint
    ├── CertValidationError    a certificate is not a valid device certificate for this CA
    ├── RootKeyError           the root's key cannot be opened (wrong passphrase) or written
    ├── RootKeyOnServerError   a server node's PKI directory holds the root's private key
    └── IssuerExpiredError     the node's issuing intermediate has expired: it issues nothing more

Callers catch ``CertError`` to handle any of them; the subclasses say whose
fault it is (a peer's CSR, an operator's directory, a server's CA, a peer's
certificate).
"""

from __future__ import annotations


class CertError(Exception):
    """Base class for every error raised by ``certs``."""


class GrantSignatureError(CertError):
    """A grant or signed script failed verification (forged, tampered, or malformed).

    Defined here, not in :mod:`certs.grants`, so agents can catch it without importing
    ``cryptography`` before they ever verify anything (it costs ~9 MB of idle RSS).
    """


class CsrError(CertError):
    """A certificate signing request was rejected; the message says why."""


class PkiExistsError(CertError):
    """Refused to overwrite PKI files that already exist (pass ``force`` to replace them)."""


class PinMismatchError(CertError):
    """The CA certificate fetched from the server does not match the pinned fingerprint."""


class CertValidationError(CertError):
    """A certificate failed validation against the org CA at the given time."""


class RootKeyError(CertError):
    """The org TLS root's key cannot be decrypted (wrong passphrase) or its passphrase is too short."""


class RootKeyOnServerError(CertError):
    """A server node's PKI directory holds the root's private key: with it, an intruder could mint intermediates."""


class IssuerExpiredError(CertError):
    """The node's issuing intermediate has expired; rotate it (``helpline certs intermediate``)."""
