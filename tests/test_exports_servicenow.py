"""ServiceNow IRE payload shape and parsing of IRE's per-item results."""

from __future__ import annotations

from typing import Any

import pytest

from server.exports.servicenow import IreError, IreResponseError, parse_ire_response, to_servicenow_ire

INVENTORY: dict[str, Any] = {
    "identity": {"hostname": "pc-7", "fqdn": "pc-7.corp.example", "serial": "SN7", "model": "OptiPlex 7090"},
    "os": {"name": "Debian GNU/Linux", "version_id": "12"},
    "cpu": {"model": "Intel(R) Core(TM) i7", "logical_cores": 8, "physical_cores": 4, "freq_mhz": 2900},
    "memory": {"total_bytes": 16 * 2**30},
    "network": {
        "interfaces": [
            {"name": "lo", "mac": "00:00:00:00:00:00", "ipv4": [{"address": "127.0.0.1"}], "is_default_route": False},
            {"name": "eth0", "mac": "aa:bb:cc:00:11:22", "ipv4": [{"address": "10.0.0.7"}], "is_default_route": True},
            {"name": "wlan0", "mac": "aa:bb:cc:00:11:33", "ipv4": [], "is_default_route": False},
        ]
    },
    "software": {
        "packages": [{"name": "bash", "version": "5.2", "vendor": "Debian", "install_date": "2024-01-02T03:04:05Z"}]
    },
}


def test_payload_items_relations_and_values() -> None:
    """Computer first, one adapter per real MAC owned by it, software as related install records."""
    payload = to_servicenow_ire("dev-7", INVENTORY)
    computer, *adapters = payload["items"]
    assert computer["className"] == "cmdb_ci_computer" and computer["internal_id"] == "dev-7"
    values = computer["values"]
    assert values["name"] == "pc-7" and values["serial_number"] == "SN7" and values["ram"] == "16384"
    assert values["os"] == "Debian GNU/Linux" and values["ip_address"] == "10.0.0.7"
    assert all(isinstance(v, str) for v in values.values())
    assert [a["values"] for a in adapters] == [
        {"name": "eth0", "mac_address": "aa:bb:cc:00:11:22", "ip_address": "10.0.0.7"},
        {"name": "wlan0", "mac_address": "aa:bb:cc:00:11:33"},
    ]
    assert all(a["className"] == "cmdb_ci_network_adapter" for a in adapters)
    assert payload["relations"] == [
        {"parent": 0, "child": 1, "type": "Owns::Owned by"},
        {"parent": 0, "child": 2, "type": "Owns::Owned by"},
    ]
    assert computer["related"] == [
        {
            "className": "cmdb_sam_sw_install",
            "values": {"display_name": "bash", "version": "5.2", "publisher": "Debian", "install_date": "2024-01-02"},
        }
    ]


def test_unknown_values_are_not_sent() -> None:
    """Fields the agent could not read are absent from the payload, never empty strings or 'None'."""
    payload = to_servicenow_ire("d", {"identity": {"hostname": "h", "serial": None}})
    assert payload["items"] == [
        {"className": "cmdb_ci_computer", "internal_id": "d", "values": {"name": "h", "correlation_id": "d"}}
    ]
    assert payload["relations"] == []


def test_parse_response_extracts_errors_inside_http_200() -> None:
    """Per-item errors, operations and sys_ids are extracted; "Unknown" sysId becomes None."""
    body = {
        "result": {
            "items": [
                {
                    "className": "cmdb_ci_computer",
                    "operation": "UPDATE",
                    "sysId": "abc123",
                    "identifierEntrySysId": "x",
                },
                {
                    "className": "cmdb_ci_network_adapter",
                    "operation": "NO_CHANGE",
                    "sysId": "Unknown",
                    "errorCount": 1,
                    "errors": [{"error": "MISSING_DEPENDENCY", "message": "no relation to a computer"}],
                },
            ],
            "relations": [],
        }
    }
    first, second = parse_ire_response(body)
    assert (first.index, first.class_name, first.operation, first.sys_id, first.ok) == (
        0,
        "cmdb_ci_computer",
        "UPDATE",
        "abc123",
        True,
    )
    assert second.sys_id is None and not second.ok
    assert second.errors == (IreError("MISSING_DEPENDENCY", "no relation to a computer"),)


def test_parse_response_rejects_wrong_shape() -> None:
    """A body without result.items raises IreResponseError; odd items are reported, not crashed on."""
    with pytest.raises(IreResponseError):
        parse_ire_response({"error": {"message": "User Not Authenticated"}})
    (odd,) = parse_ire_response({"result": [{"items": ["garbage"]}]})
    assert not odd.ok and odd.errors[0].error == "MALFORMED_ITEM"
