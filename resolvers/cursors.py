"""Opaque, stateless, tamper-evident cursors.

A cursor is a signed record: what it belongs to (a digest of the connection's scope, so
that a cursor of one device, range or filter is refused by another) and where it points.
Any replica holding the same secret, after any restart, can resume from one.

Layout before base64url: signature (10 bytes, keyed BLAKE2b), kind (1 byte), scope
(8 bytes), a bitmap of the fields present (1 byte), each present field as a signed
64-bit integer. Pages of 500 edges sign 500 cursors, so this stays cheap.
"""

import base64
import binascii
import hashlib
import hmac
import json
import struct
from collections.abc import Callable, Sequence
from functools import lru_cache

SIGNATURE_BYTES = 10
_INVALID = "The cursor is not valid: it is not one this API issued."


_HEADER = struct.Struct(">c8sB")
_URL_SAFE = bytes.maketrans(b"+/", b"-_")


@lru_cache(maxsize=16)
def _integers(count: int) -> struct.Struct:
    return struct.Struct(f">{count}q")


class CursorError(ValueError):
    """A cursor that is malformed, tampered with, or from another connection."""


class CursorCodec:
    def __init__(self, secret: str) -> None:
        key = hashlib.sha256(secret.encode()).digest()
        # Keyed once: each signature copies this state, about half the cost of keying.
        self._keyed = hashlib.blake2b(key=key, digest_size=SIGNATURE_BYTES)

    @staticmethod
    def scope(*parts: object) -> bytes:
        """A short digest naming one connection: device, range bounds, filter, ..."""
        text = json.dumps(parts, separators=(",", ":"), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).digest()[:8]

    def _sign(self, body: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(body)
        return mac.digest()

    def encode(self, kind: str, scope: bytes, fields: Sequence[int | None]) -> str:
        return self.encoder(kind, scope)(fields)

    def encoder(self, kind: str, scope: bytes) -> Callable[[Sequence[int | None]], str]:
        """``encode`` for one kind and scope: what a page of edges calls for each edge."""
        kind_byte = kind.encode()
        keyed = self._keyed
        to_base64 = binascii.b2a_base64
        # Per field count, for cursors with every field present (all but a range's last
        # event's): the header, the signature's state with the header fed in (it is the
        # same for each), and the fields' layout. Each cursor then feeds in its fields.
        full: dict[int, tuple[bytes, hashlib.blake2b, struct.Struct]] = {}

        def encode(fields: Sequence[int | None]) -> str:
            size = len(fields)
            known = full.get(size)
            if known is None:
                header = _HEADER.pack(kind_byte, scope, (1 << size) - 1)
                signing = keyed.copy()
                signing.update(header)
                known = full[size] = (header, signing, _integers(size))
            header, signing, integers = known
            try:
                values = integers.pack(*fields)
            except struct.error:  # a field absent
                present = [f for f in fields if f is not None]
                bitmap = sum(1 << i for i, f in enumerate(fields) if f is not None)
                header = _HEADER.pack(kind_byte, scope, bitmap)
                values = _integers(len(present)).pack(*present)
                signing = keyed.copy()
                signing.update(header)
            mac = signing.copy()
            mac.update(values)
            # base64.urlsafe_b64encode, without its wrappers' calls
            encoded = to_base64(mac.digest() + header + values, newline=False)
            return encoded.translate(_URL_SAFE).rstrip(b"=").decode()

        return encode

    def decode(self, cursor: str, kind: str, scope: bytes, size: int) -> list[int | None]:
        """The fields of a cursor of this kind and scope; CursorError for anything else."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise CursorError(_INVALID) from None
        signature, body = raw[:SIGNATURE_BYTES], raw[SIGNATURE_BYTES:]
        if (
            len(body) < 10
            or (len(body) - 10) % 8
            or not hmac.compare_digest(signature, self._sign(body))
        ):
            raise CursorError(_INVALID)
        their_kind, their_scope, bitmap = _HEADER.unpack_from(body)
        if their_kind != kind.encode() or their_scope != scope:
            raise CursorError(
                "The cursor belongs to another connection (another device, range or filter)."
            )
        values = iter(_integers((len(body) - 10) // 8).unpack_from(body, 10))
        if bitmap >> size or bin(bitmap).count("1") != (len(body) - 10) // 8:
            raise CursorError(_INVALID)
        return [next(values) if bitmap >> i & 1 else None for i in range(size)]
