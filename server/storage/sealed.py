"""Files sealed at rest: recordings, shell casts and task artifacts encrypted with a key the database never holds.

A sealed file is a header and a sequence of records, each AES-256-GCM under a key derived for that
file alone (HKDF-SHA256 of the storage key with the file's random salt), so nonces never repeat
across files and one file's key opens nothing else::

    header  = b"HLSEAL1\\n" | key_id (8) | salt (16)
    record  = length (4, big-endian, of the ciphertext) | AES-GCM(nonce = index (8) | flag (4))
    flag    = 0 for data, 1 for the final record (empty), which :meth:`SealedWriter.close` writes

The associated data of every record is the header, so a record moved to another file fails; the
nonce holds its index, so records reordered, dropped or repeated inside a file fail; the final
record shows whether the file was cut short (:attr:`SealedReader.complete`). Appends resume after
a restart (a task artifact's upload continues where it stopped): the writer counts the records
already there. Files written before sealing was turned on have no header and are read as they are.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from common import keyfile

MAGIC = b"HLSEAL1\n"
HEADER_BYTES = len(MAGIC) + 8 + 16
TAG_BYTES = 16
#: A record's plaintext is at most this (a screen update is ≤ 8 MiB; larger writes are split).
MAX_RECORD_BYTES = 16 * 1024 * 1024
_LENGTH = struct.Struct(">I")
_DATA, _FINAL = 0, 1


class SealError(Exception):
    """A sealed file that cannot be opened: another key, altered, reordered or truncated mid-record."""


class StorageKey:
    """The 32-byte storage key, read from a file outside the database (created 0600 on first use)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("a storage key is 32 bytes")
        self._secret = secret
        self.key_id = hashlib.sha256(b"helpline storage key id\0" + secret).digest()[:8]
        #: Whether a file without the seal header may be read as it is. Only while sealing is off
        #: (``seal_at_rest = false``): with sealing on, the files from before were sealed at the first start
        #: (:func:`seal_legacy`), so a file in the clear is one somebody put there, and is refused.
        self.plain_ok = False

    @classmethod
    def load_or_create(cls, path: Path) -> StorageKey:
        """The key in ``path`` (common/keyfile.py: 0600, exactly 32 bytes), made when there is none."""
        return cls(keyfile.load_or_create(path, 32))

    def file_cipher(self, salt: bytes) -> AESGCM:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"helpline sealed file v1").derive(
            self._secret)
        return AESGCM(derived)

    def __repr__(self) -> str:
        return f"StorageKey(id={self.key_id.hex()})"  # never the secret


def _nonce(index: int, flag: int) -> bytes:
    return struct.pack(">QI", index, flag)


def is_sealed(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


class SealedWriter:
    """Appends records to a sealed file; reopening an existing one continues after its last record."""

    def __init__(self, path: Path, key: StorageKey) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        self._file: BinaryIO = os.fdopen(fd, "r+b")
        existing = self._file.read(HEADER_BYTES)
        if not existing:
            self._header = MAGIC + key.key_id + os.urandom(16)
            self._file.write(self._header)
            self._index = 0
        else:
            if len(existing) < HEADER_BYTES or not existing.startswith(MAGIC):
                self._file.close()
                raise SealError(f"{path.name} is not a sealed file; refusing to append to it")
            if existing[len(MAGIC):len(MAGIC) + 8] != key.key_id:
                self._file.close()
                raise SealError(f"{path.name} was sealed with another storage key")
            self._header = existing
            self._index, final = _count(self._file)
            if final:
                self._file.close()
                raise SealError(f"{path.name} is closed; nothing may be appended")
        self._cipher = key.file_cipher(self._header[-16:])
        self._file.seek(0, os.SEEK_END)
        self.plaintext_bytes = 0

    def append(self, data: bytes) -> None:
        """Seal ``data`` as one record (split above :data:`MAX_RECORD_BYTES`); nothing for empty data, so
        an empty record always means the final one."""
        for start in range(0, len(data), MAX_RECORD_BYTES):
            self._write(data[start:start + MAX_RECORD_BYTES], _DATA)

    def _write(self, data: bytes, flag: int) -> None:
        sealed = self._cipher.encrypt(_nonce(self._index, flag), data, self._header)
        self._file.write(_LENGTH.pack(len(sealed)) + sealed)
        self._index += 1
        self.plaintext_bytes += len(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self, *, final: bool = True) -> None:
        """Write the final record (unless ``final`` is False: an upload to resume later) and close."""
        if final:
            self._write(b"", _FINAL)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def _count(fh: BinaryIO) -> tuple[int, bool]:
    """(records, ends with the final record) of the file at ``fh`` positioned after the header."""
    index, final, position = 0, False, fh.tell()
    size = os.fstat(fh.fileno()).st_size
    while position + _LENGTH.size <= size:
        fh.seek(position)
        (length,) = _LENGTH.unpack(fh.read(_LENGTH.size))
        if length < TAG_BYTES or length > MAX_RECORD_BYTES + TAG_BYTES or position + 4 + length > size:
            break  # a record cut short by a crash: the writer appends after the last whole one
        final = length == TAG_BYTES  # only the final record is empty (append() never writes one)
        position += 4 + length
        index += 1
    fh.truncate(position)
    return index, final


class SealedReader:
    """Iterates the plaintext records of a sealed file (or the bytes of an unsealed legacy file)."""

    def __init__(self, path: Path, key: StorageKey | None, *, chunk: int = 256 * 1024) -> None:
        self.path, self.key, self.chunk = path, key, chunk
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as fh:
            head = fh.read(HEADER_BYTES)
            if not head.startswith(MAGIC):
                if self.key is not None and not self.key.plain_ok:
                    raise SealError(f"{self.path.name} is stored in the clear while sealing is on: refused "
                                    "(sealed files are never rewritten in the clear; was it replaced?)")
                self.complete = True
                yield head
                while data := fh.read(self.chunk):
                    yield data
                return
            if self.key is None:
                raise SealError(f"{self.path.name} is sealed and no storage key is configured")
            if len(head) < HEADER_BYTES or head[len(MAGIC):len(MAGIC) + 8] != self.key.key_id:
                raise SealError(f"{self.path.name} was sealed with another storage key")
            cipher = self.key.file_cipher(head[-16:])
            index = 0
            while raw := fh.read(_LENGTH.size):
                if self.complete:
                    raise SealError(f"{self.path.name} has records after its final one")
                if len(raw) < _LENGTH.size:
                    raise SealError(f"{self.path.name} is cut short inside a record")
                (length,) = _LENGTH.unpack(raw)
                if length < TAG_BYTES or length > MAX_RECORD_BYTES + TAG_BYTES:
                    raise SealError(f"{self.path.name} has a record of impossible length")
                sealed = fh.read(length)
                if len(sealed) < length:
                    raise SealError(f"{self.path.name} is cut short inside a record")
                flag = _FINAL if length == TAG_BYTES else _DATA
                try:
                    data = cipher.decrypt(_nonce(index, flag), sealed, head)
                except InvalidTag as exc:
                    raise SealError(f"{self.path.name}: record {index} fails authentication") from exc
                index += 1
                if flag == _FINAL:
                    self.complete = True
                else:
                    yield data


def plaintext_size(path: Path, key: StorageKey | None) -> int:
    """Bytes of plaintext a sealed (or legacy) file holds; for a sealed file, without decrypting."""
    with path.open("rb") as fh:
        head = fh.read(HEADER_BYTES)
        if not head.startswith(MAGIC):
            return os.fstat(fh.fileno()).st_size
        total, position, size = 0, HEADER_BYTES, os.fstat(fh.fileno()).st_size
        while position + _LENGTH.size <= size:
            fh.seek(position)
            (length,) = _LENGTH.unpack(fh.read(_LENGTH.size))
            if length < TAG_BYTES or position + 4 + length > size:
                break
            total += length - TAG_BYTES
            position += 4 + length
        return total


def resume_point(path: Path) -> int:
    """Whole records in a sealed file, a record cut short by a crash removed (no key needed)."""
    with path.open("r+b") as fh:
        head = fh.read(HEADER_BYTES)
        if len(head) < HEADER_BYTES or not head.startswith(MAGIC):
            raise SealError(f"{path.name} is not a sealed file")
        return _count(fh)[0]


def seal_legacy(directory: Path, suffixes: tuple[str, ...], key: StorageKey) -> int:
    """Seal, in place, every file in ``directory`` ending in one of ``suffixes`` that is still in the clear.

    Run once at start when sealing is on (a no-op after the first time): files written before sealing
    was turned on become sealed, so the readers can refuse any file in the clear. Each is written to a
    temporary file and renamed over the original (a crash leaves either the old or the sealed file).
    """
    sealed = 0
    if not directory.is_dir():
        return 0
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.is_symlink() or not path.name.endswith(suffixes) or is_sealed(path):
            continue
        temporary = path.with_name(f".{path.name}.sealing")
        temporary.unlink(missing_ok=True)
        writer = SealedWriter(temporary, key)
        with path.open("rb") as source:
            while block := source.read(1024 * 1024):
                writer.append(block)
        writer.close()
        os.replace(temporary, path)
        sealed += 1
    return sealed
