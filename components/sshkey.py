"""Strict parsing of OpenSSH public keys (rule I1 of SECURITY.md).

A developer's key ends up in `authorized_keys` through user data, so anything
that is not exactly one well-formed public key line is refused here, before a
resource exists.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass

MIN_RSA_BITS = 3072

# Key type -> the curve name an ECDSA blob must carry (None: not ECDSA).
SUPPORTED_TYPES: dict[str, str | None] = {
    "ssh-ed25519": None,
    "ssh-rsa": None,
    "ecdsa-sha2-nistp256": "nistp256",
    "ecdsa-sha2-nistp384": "nistp384",
    "ecdsa-sha2-nistp521": "nistp521",
    "sk-ssh-ed25519@openssh.com": None,
    "sk-ecdsa-sha2-nistp256@openssh.com": "nistp256",
}
REFUSED_TYPES = {"ssh-dss": "DSA keys are refused (broken since OpenSSH 7.0)"}

# The comment is pasted into a shell heredoc-free assignment and then a file;
# keep it to characters that need no thought anywhere.
_COMMENT = re.compile(r"^[A-Za-z0-9@._+=:,/-]{0,100}$")


class SshKeyError(ValueError):
    """A public key that must not be installed; the message says why."""


@dataclass(frozen=True)
class SshPublicKey:
    key_type: str
    blob: str
    comment: str
    bits: int | None

    @property
    def line(self) -> str:
        return " ".join(p for p in (self.key_type, self.blob, self.comment) if p)


def _read_string(data: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(data):
        raise SshKeyError("key blob is truncated")
    (length,) = struct.unpack(">I", data[offset : offset + 4])
    end = offset + 4 + length
    if end > len(data):
        raise SshKeyError("key blob is truncated")
    return data[offset + 4 : end], end


def parse_public_key(text: str) -> SshPublicKey:
    """Parse one OpenSSH public key line or raise SshKeyError with the reason."""
    key_type, blob_b64, comment = _split_line(text)
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SshKeyError(f"key data is not valid base64 ({exc})") from None
    bits = _blob_bits(key_type, blob)
    return SshPublicKey(key_type=key_type, blob=blob_b64, comment=comment, bits=bits)


def _split_line(text: str) -> tuple[str, str, str]:
    """(type, base64 blob, comment) of a single key line, the type supported and the comment plain."""
    if not isinstance(text, str):
        raise SshKeyError("must be a string holding one public key line")
    stripped = text.strip()
    if not stripped:
        raise SshKeyError("is empty")
    if "PRIVATE KEY" in stripped:
        raise SshKeyError("this is a private key; paste the .pub file instead, and rotate this key")
    if "\n" in stripped or "\r" in stripped:
        raise SshKeyError("must be a single line (found several lines)")
    parts = stripped.split()
    if len(parts) < 2:
        raise SshKeyError("expected '<type> <base64> [comment]'")
    key_type, blob_b64, *rest = parts
    _check_type(key_type, stripped)
    comment = " ".join(rest)
    if not _COMMENT.match(comment):
        raise SshKeyError(
            f"comment {comment[:40]!r} has characters outside [A-Za-z0-9@._+=:,/-] or is over 100"
        )
    return key_type, blob_b64, comment


def _check_type(key_type: str, line: str) -> None:
    if key_type in REFUSED_TYPES:
        raise SshKeyError(REFUSED_TYPES[key_type])
    if key_type in SUPPORTED_TYPES:
        return
    # A supported type further along the line means something precedes the
    # key: an authorized_keys option such as command="..." or from="...".
    if any(t in line for t in SUPPORTED_TYPES) or "=" in key_type or "," in key_type:
        raise SshKeyError(
            f"starts with {key_type[:40]!r}: authorized_keys options are not allowed; give the bare key"
        )
    raise SshKeyError(f"unsupported key type {key_type[:40]!r}; allowed: {', '.join(SUPPORTED_TYPES)}")


def _blob_bits(key_type: str, blob: bytes) -> int:
    """The key's size in bits, once the blob is checked to be exactly one key of `key_type`."""
    inner_type, offset = _read_string(blob, 0)
    if inner_type.decode("ascii", "replace") != key_type:
        raise SshKeyError(
            f"key data says {inner_type.decode('ascii', 'replace')[:40]!r} but the line says "
            f"{key_type!r}"
        )
    if key_type == "ssh-rsa":
        bits, offset = _rsa_bits(blob, offset)
    elif key_type in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
        bits, offset = _ed25519_bits(blob, offset)
    else:
        bits, offset = _ecdsa_bits(key_type, blob, offset)
    if key_type.startswith("sk-"):
        _, offset = _read_string(blob, offset)  # a security key's application string
    if offset != len(blob):
        raise SshKeyError("key data has trailing bytes")
    return bits


def _rsa_bits(blob: bytes, offset: int) -> tuple[int, int]:
    exponent, offset = _read_string(blob, offset)
    modulus, offset = _read_string(blob, offset)
    if not exponent or not modulus:
        raise SshKeyError("RSA key data is empty")
    bits = int.from_bytes(modulus, "big").bit_length()
    if bits < MIN_RSA_BITS:
        raise SshKeyError(f"RSA key is {bits} bits; at least {MIN_RSA_BITS} required")
    return bits, offset


def _ed25519_bits(blob: bytes, offset: int) -> tuple[int, int]:
    point, offset = _read_string(blob, offset)
    if len(point) != 32:
        raise SshKeyError(f"ed25519 key is {len(point)} bytes; 32 expected")
    return 256, offset


def _ecdsa_bits(key_type: str, blob: bytes, offset: int) -> tuple[int, int]:
    curve, offset = _read_string(blob, offset)
    expected = SUPPORTED_TYPES[key_type]
    if curve.decode("ascii", "replace") != expected:
        raise SshKeyError(f"ECDSA curve {curve[:20]!r} does not match type {key_type!r}")
    point, offset = _read_string(blob, offset)
    if not point or point[0] != 4:
        raise SshKeyError("ECDSA point is not an uncompressed curve point")
    return {"nistp256": 256, "nistp384": 384, "nistp521": 521}[expected], offset
