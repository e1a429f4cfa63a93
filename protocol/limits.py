"""Size limits shared by both ends. Changing one is a protocol change."""

from __future__ import annotations

#: Largest control-channel message (a full inventory with thousands of packages fits).
MAX_CONTROL_MESSAGE_BYTES = 4 * 1024 * 1024
#: Identifiers: message ids, device ids, session ids.
MAX_ID_LEN = 64
#: Short human strings: names, versions, reasons.
MAX_SHORT_STR = 256
#: Longer text: error messages, PEM documents.
MAX_TEXT = 16 * 1024
#: Lists of capabilities and similar small arrays.
MAX_SMALL_LIST = 64
#: Health samples per batch.
MAX_HEALTH_BATCH = 500
#: One health sample's metrics as compact JSON. The server refuses (only) a sample above it; the agent
#: trims its least relevant entries (most roomy disks, sensors) to fit before sending.
MAX_HEALTH_METRICS_BYTES = 16 * 1024
#: What the agent puts in one health batch (metrics JSON summed): with many near-limit samples a
#: 500-sample batch would pass MAX_CONTROL_MESSAGE_BYTES, which closes the channel instead of being acked.
MAX_HEALTH_BATCH_BYTES = 1024 * 1024
#: Inventory sections per message.
MAX_SECTIONS = 32
#: One ``authority.update`` as encoded on the wire. The server splits a larger one into parts
#: (``part``/``parts``) that the agent joins before applying; 1 MiB below the frame limit leaves room
#: for the envelope and for any rounding in the split.
MAX_AUTHORITY_UPDATE_BYTES = 3 * 1024 * 1024
#: Parts of one split ``authority.update``: 256 documents of the largest size need 22 (the agent holds
#: the parts in memory until the last arrives).
MAX_AUTHORITY_PARTS = 32
#: A signed revocation list's canonical body. Escaped inside a message it can grow by half (ids are
#: quoted), so a list this size still fits an update's first part with the root and its rotations:
#: about 25,000 revoked credential and document ids.
MAX_REVOCATION_LIST_BYTES = 3 * 512 * 1024
