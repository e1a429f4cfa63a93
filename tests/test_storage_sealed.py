"""Files sealed at rest (server/storage/sealed.py): what reads back, and every alteration that must not."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import pytest

from common.keyfile import KeyFileError
from server.storage.sealed import (
    HEADER_BYTES,
    SealedReader,
    SealedWriter,
    SealError,
    StorageKey,
    is_sealed,
    plaintext_size,
    resume_point,
    seal_legacy,
)


def _key(tmp_path: Path, name: str = "storage.key") -> StorageKey:
    return StorageKey.load_or_create(tmp_path / "keys" / name)


def _records(path: Path) -> list[tuple[int, int]]:
    """(offset, length) of each record, read from the framing alone."""
    data, out, at = path.read_bytes(), [], HEADER_BYTES
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        out.append((at, 4 + length))
        at += 4 + length
    return out


def test_round_trip_resume_and_key_file(tmp_path: Path) -> None:
    key = _key(tmp_path)
    mode = stat.S_IMODE(os.stat(tmp_path / "keys" / "storage.key").st_mode)
    assert mode == 0o600 and StorageKey.load_or_create(tmp_path / "keys" / "storage.key").key_id == key.key_id
    path = tmp_path / "rec.hlrec"
    writer = SealedWriter(path, key)
    writer.append(b"first record " * 100)
    writer.append(b"")  # nothing: an empty record would read as the final one
    writer.close(final=False)
    resumed = SealedWriter(path, key)  # an upload continued after a restart
    resumed.append(b"second")
    resumed.close()
    assert b"first record" not in path.read_bytes() and is_sealed(path)
    reader = SealedReader(path, key)
    assert b"".join(reader) == b"first record " * 100 + b"second" and reader.complete
    assert plaintext_size(path, None) == 1300 + 6
    with pytest.raises(SealError, match="closed"):
        SealedWriter(path, key)


def test_alterations_fail(tmp_path: Path) -> None:
    key = _key(tmp_path)
    path = tmp_path / "a.bin"
    writer = SealedWriter(path, key)
    for part in (b"one", b"two", b"three"):
        writer.append(part)
    writer.close()
    original = path.read_bytes()
    records = _records(path)

    flipped = bytearray(original)
    flipped[records[1][0] + 6] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises(SealError, match="authentication"):
        b"".join(SealedReader(path, key))

    (a, la), (b, lb) = records[0], records[1]  # swap the first two records
    path.write_bytes(original[:a] + original[b:b + lb] + original[a:a + la] + original[b + lb:])
    with pytest.raises(SealError, match="authentication"):
        b"".join(SealedReader(path, key))

    path.write_bytes(original[:records[-1][0]])  # the final record cut off
    reader = SealedReader(path, key)
    assert b"".join(reader) == b"onetwothree" and not reader.complete

    path.write_bytes(original[:records[1][0] + 7])  # cut inside a record
    with pytest.raises(SealError, match="cut short"):
        b"".join(SealedReader(path, key))
    assert resume_point(path) == 1 and path.stat().st_size == records[1][0]  # the writer resumes after it

    path.write_bytes(original)
    with pytest.raises(SealError, match="another storage key"):
        b"".join(SealedReader(path, _key(tmp_path, "other.key")))
    with pytest.raises(SealError, match="no storage key"):
        b"".join(SealedReader(path, None))

    other = tmp_path / "b.bin"  # a record moved into another file (same key) fails: the header is bound
    writer = SealedWriter(other, key)
    writer.append(b"xxx")
    writer.close()
    moved = other.read_bytes()[:HEADER_BYTES] + original[records[0][0]:]
    other.write_bytes(moved)
    with pytest.raises(SealError, match="authentication"):
        b"".join(SealedReader(other, key))


def test_files_in_the_clear_are_sealed_at_start_and_refused_after(tmp_path: Path) -> None:
    """With sealing on, a file in the clear is refused (someone swapped it in); the ones from before sealing
    are sealed in place at the first start. With sealing off (plain_ok) they read as they are."""
    key = _key(tmp_path)
    legacy = tmp_path / "rec" / "old.hlrec"
    legacy.parent.mkdir()
    legacy.write_bytes(b"written before sealing" * 50)
    (tmp_path / "rec" / "old.json").write_text("{}")  # metadata stays as it is
    with pytest.raises(SealError, match="in the clear"):
        b"".join(SealedReader(legacy, key))
    key.plain_ok = True
    assert b"".join(SealedReader(legacy, key)) == b"written before sealing" * 50
    key.plain_ok = False
    assert plaintext_size(legacy, key) == legacy.stat().st_size and not is_sealed(legacy)
    with pytest.raises(SealError, match="not a sealed file"):
        SealedWriter(legacy, key)
    assert seal_legacy(tmp_path / "rec", (".hlrec", ".cast"), key) == 1
    assert is_sealed(legacy) and not is_sealed(tmp_path / "rec" / "old.json")
    assert b"".join(SealedReader(legacy, key)) == b"written before sealing" * 50
    assert seal_legacy(tmp_path / "rec", (".hlrec", ".cast"), key) == 0  # once
    assert "secret" not in repr(key) and key.key_id.hex() in repr(key)


def test_key_file_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"short")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="32-byte"):
        StorageKey.load_or_create(path)
    path.write_bytes(bytes(32))
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="0600"):
        StorageKey.load_or_create(path)
