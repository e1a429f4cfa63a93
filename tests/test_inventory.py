"""Full inventory: sections, timing, checksums, deltas, and a real package install/removal."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.inventory import SECTIONS, canonical_json, collect_inventory, compute_delta, section_checksums


@pytest.fixture(scope="module")
def inventory() -> dict[str, Any]:
    return collect_inventory()


def test_all_sections_present_and_json_able(inventory: dict[str, Any]) -> None:
    """Every SECTIONS name is present, in order, and the whole inventory round-trips through JSON."""
    assert tuple(inventory) == SECTIONS
    assert json.loads(json.dumps(inventory)) == inventory
    for name, data in inventory.items():
        if data is not None:
            assert isinstance(data.get("unavailable"), dict), name


def test_collect_inventory_under_two_seconds() -> None:
    """A whole inventory run takes less than 2 s on this machine."""
    start = time.perf_counter()
    collect_inventory()
    assert time.perf_counter() - start < 2.0


def test_collector_crash_becomes_error_section() -> None:
    """A failing collector yields an error section; the others are still collected."""

    def boom() -> Any:
        raise RuntimeError("sensor exploded")

    inv = collect_inventory({"memory": lambda: {"total_bytes": 1, "unavailable": {}}, "battery": boom})
    assert inv["memory"]["total_bytes"] == 1
    assert inv["battery"]["error"] == "RuntimeError: sensor exploded"


def test_checksums_are_sha256_of_canonical_json() -> None:
    """Checksums depend on content only, not key order, and are SHA-256 hex."""
    a = section_checksums({"os": {"b": 1, "a": "é"}})
    b = section_checksums({"os": {"a": "é", "b": 1}})
    assert a == b and len(a["os"]) == 64
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_delta_only_changed_section(inventory: dict[str, Any]) -> None:
    """After one section changes, only it is in the delta; unchanged gives an empty delta; no ack gives all."""
    acked = section_checksums(inventory)
    assert compute_delta(inventory, acked) == {}
    changed = json.loads(json.dumps(inventory))
    changed["users"]["users"].append("someone-new")
    assert compute_delta(changed, acked) == {"users": changed["users"]}
    assert compute_delta(inventory, None) == inventory
    assert set(compute_delta(inventory, {k: v for k, v in acked.items() if k != "cpu"})) == {"cpu"}


def test_unchanged_delta_between_two_runs_is_small(inventory: dict[str, Any]) -> None:
    """Two runs a moment apart differ by less than 2 KB of JSON (volatile bits such as free space only)."""
    second = collect_inventory()
    delta = compute_delta(second, section_checksums(inventory))
    assert len(canonical_json(delta)) < 2048, sorted(delta)


@pytest.fixture
def tiny_deb(tmp_path: Path) -> Iterator[str]:
    """Build and install a tiny .deb; purge it by name in the finalizer."""
    if shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None:
        pytest.skip("dpkg tools not installed")
    name = f"helpline-test-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/share/doc" / name).mkdir(parents=True)
    (root / "usr/share/doc" / name / "README").write_text("test package\n")
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.2.3\nArchitecture: all\nMaintainer: Helpline Tests <tests@example.invalid>\n"
        "Description: throw-away package for the inventory tests\n"
    )
    deb = tmp_path / f"{name}.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["dpkg", "--purge", name], check=False, capture_output=True, timeout=60)


@pytest.mark.serial  # dpkg -i: one dpkg at a time on the machine (scripts/test runs serial tests alone)
def test_installed_then_removed_package_changes_only_software(tiny_deb: str, tmp_path: Path) -> None:
    """A real dpkg -i shows the package in the software section only; after purge software is as before."""
    before = collect_inventory()
    subprocess.run(["dpkg", "-i", str(tmp_path / f"{tiny_deb}.deb")], check=True, capture_output=True, timeout=60)
    during = collect_inventory()
    pkgs = {p["name"]: p for p in during["software"]["packages"]}
    assert pkgs[tiny_deb]["version"] == "1.2.3"
    assert pkgs[tiny_deb]["vendor"] == "Helpline Tests <tests@example.invalid>"
    assert pkgs[tiny_deb]["install_date"] is not None
    assert "software" in compute_delta(during, section_checksums(before))
    assert [s for s, data in during.items() if tiny_deb in json.dumps(data)] == ["software"]
    subprocess.run(["dpkg", "--purge", tiny_deb], check=True, capture_output=True, timeout=60)
    after = collect_inventory()
    assert after["software"] == before["software"]
    assert "software" not in compute_delta(after, section_checksums(before))
