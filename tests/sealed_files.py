"""Read files the in-process test servers sealed at rest (server/storage/sealed.py), as tests need plaintext."""

from __future__ import annotations

from pathlib import Path

from server.storage import keys
from server.storage.sealed import HEADER_BYTES, MAGIC, SealedReader, SealError, is_sealed


def plain(path: Path, *, partial: bool = True) -> bytes:
    """The plaintext of ``path``, opened with whichever key this process loaded that sealed it.

    ``partial``: a file still being written may end inside a record; return the whole records before it.
    A file that is not sealed fails the test: everything these helpers read must be sealed at rest.
    """
    assert is_sealed(path), f"{path} is stored in the clear"
    key_id = path.read_bytes()[len(MAGIC):len(MAGIC) + 8] if path.stat().st_size >= HEADER_BYTES else b""
    key = next((k for k in keys._loaded.values() if k.key_id == key_id), None)
    assert key is not None, f"no key loaded in this process sealed {path}"
    out: list[bytes] = []
    try:
        out.extend(SealedReader(path, key))
    except SealError as exc:
        if not (partial and "cut short" in str(exc)):
            raise
    return b"".join(out)
