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
