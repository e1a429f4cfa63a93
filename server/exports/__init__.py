"""Standard exports of a device's inventory: GLPI inventory JSON and ServiceNow IRE payloads.

Both take the device id and the inventory dict the agent sends (``agent.inventory`` sections)
and are pure functions: no I/O, so the server can run them anywhere and tests can validate them.
:func:`export_fleet` runs one over many devices, skipping (and naming) a device whose stored
inventory does not fit the section schemas instead of failing the whole export.
"""

from server.exports.fleet import FleetExport, Skipped, export_fleet
from server.exports.glpi import to_glpi_inventory
from server.exports.servicenow import IreError, IreItemResult, IreResponseError, parse_ire_response, to_servicenow_ire

__all__ = [
    "FleetExport",
    "IreError",
    "IreItemResult",
    "IreResponseError",
    "Skipped",
    "export_fleet",
    "parse_ire_response",
    "to_glpi_inventory",
    "to_servicenow_ire",
]
