"""Reading the object store without JetStream consumers (certs/nats.py grants nodes no CONSUMER.CREATE).

nats-py's ObjectStore.get and list subscribe ordered *push* consumers, and nats-server does not check a
push consumer's delivery subject against its creator's rights: a node allowed to create consumers could
deliver the bucket's stored data into another node's inbox.  So nodes read chunk by chunk with
``STREAM.MSG.GET`` (``next_by_subj``) and list with ``STREAM.INFO`` (``subjects_filter``) plus the last
metadata message per object: request/reply on the one stream, nothing a node can point elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext
    from nats.js.object_store import ObjectStore

#: One object's chunks and metadata subjects (nats-py's object store layout).
_CHUNKS = "$O.{bucket}.C.{nuid}"
_ALL_META = "$O.{bucket}.M.>"
_DIGEST = "SHA-256="


async def fetch_into(js: JetStreamContext, store: ObjectStore, bucket: str, name: str, out: IO[bytes]) -> bool:
    """Write object ``name``'s bytes into ``out``; False when it does not exist (or is deleted).

    Raises nats.js.errors.BadObjectMetaError / DigestMismatchError like nats-py's get (digest over all
    chunks, checked before returning, so the caller may publish the file only after True).
    """
    from nats.js.errors import BadObjectMetaError, DigestMismatchError, NotFoundError, ObjectNotFoundError

    try:
        info = await store.get_info(name)
    except ObjectNotFoundError:
        return False
    if not info.nuid or info.is_link():
        raise BadObjectMetaError
    stream = f"OBJ_{bucket}"
    subject = _CHUNKS.format(bucket=bucket, nuid=info.nuid)
    digest, size, seq = hashlib.sha256(), 0, 1
    loop = asyncio.get_running_loop()
    while size < (info.size or 0):
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except NotFoundError:
            break
        data = msg.data or b""
        await loop.run_in_executor(None, out.write, data)
        digest.update(data)
        size += len(data)
        seq = (msg.seq or seq) + 1
    expected = (info.digest or "").removeprefix(_DIGEST).removeprefix(_DIGEST.upper())
    if size != (info.size or 0) or digest.digest() != base64.urlsafe_b64decode(expected):
        raise DigestMismatchError
    return True


async def list_names(js: JetStreamContext, bucket: str) -> list[str]:
    """Names of the bucket's objects that are not deleted (last metadata message per object)."""
    from nats.js.errors import NotFoundError

    stream = f"OBJ_{bucket}"
    meta = _ALL_META.format(bucket=bucket)
    info = await js.stream_info(stream, subjects_filter=meta)
    names = []
    for subject in sorted(info.state.subjects or {}):
        try:
            msg = await js.get_last_msg(stream, subject)
        except NotFoundError:
            continue
        record = json.loads(msg.data or b"{}")
        if isinstance(record, dict) and not record.get("deleted") and isinstance(record.get("name"), str):
            names.append(record["name"])
    return sorted(names)
