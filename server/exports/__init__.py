"""Standard exports of a device's inventory: GLPI inventory JSON and ServiceNow IRE payloads.

Both take the device id and the inventory dict the agent sends (``agent.inventory`` sections)
and are pure functions: no I/O, so the server can run them anywhere and tests can validate them.
"""

from server.exports.glpi import to_glpi_inventory
from server.exports.servicenow import IreError, IreItemResult, IreResponseError, parse_ire_response, to_servicenow_ire

__all__ = [
    "IreError",
    "IreItemResult",
    "IreResponseError",
    "parse_ire_response",
    "to_glpi_inventory",
    "to_servicenow_ire",
]
