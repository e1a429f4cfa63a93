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
#: Inventory sections per message.
MAX_SECTIONS = 32
