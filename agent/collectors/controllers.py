"""PCI and USB controllers from sysfs, with names from lspci where pciutils is installed.

The ids (vendor, device, class, revision, subsystem) and the bound driver come from sysfs,
which every Linux kernel has; lspci only adds human names from its pci.ids database. Without
it the class still gets a name from the PCI base class table below, and vendor/device names
are ``None`` with a reason. USB devices carry their own names in sysfs (manufacturer, product).
USB serial numbers are not collected: they identify a person's own devices, not the machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agent.collectors._util import read_text, run_command

PCI_DEVICES = Path("/sys/bus/pci/devices")
USB_DEVICES = Path("/sys/bus/usb/devices")
MAX_DEVICES = 512

# PCI Code and ID Assignment Specification, base class codes.
PCI_BASE_CLASSES: dict[int, str] = {
    0x00: "Unclassified device",
    0x01: "Mass storage controller",
    0x02: "Network controller",
    0x03: "Display controller",
    0x04: "Multimedia controller",
    0x05: "Memory controller",
    0x06: "Bridge",
    0x07: "Communication controller",
    0x08: "Generic system peripheral",
    0x09: "Input device controller",
    0x0A: "Docking station",
    0x0B: "Processor",
    0x0C: "Serial bus controller",
    0x0D: "Wireless controller",
    0x0E: "Intelligent controller",
    0x0F: "Satellite communications controller",
    0x10: "Encryption controller",
    0x11: "Signal processing controller",
    0x12: "Processing accelerators",
    0x13: "Non-Essential Instrumentation",
    0x40: "Coprocessor",
    0xFF: "Unassigned class",
}


def _hex(value: str | None, width: int) -> str | None:
    """sysfs ``0x8086`` → ``8086`` (lower case, zero-padded), as lspci -n prints ids."""
    if not value:
        return None
    try:
        return f"{int(value, 16):0{width}x}"
    except ValueError:
        return None


def parse_lspci_vmm(text: str) -> dict[str, dict[str, str]]:
    """``lspci -vmm -D`` blocks → {slot: {Class, Vendor, Device, SVendor, SDevice, Rev, ...}}."""
    devices: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if "Slot" in fields:
            devices[fields["Slot"]] = fields
    return devices


def _driver(path: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(path / "driver"))
    except OSError:
        return None


def pci_devices(root: Path = PCI_DEVICES, names: dict[str, dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """One entry per PCI function, sorted by slot; ``names`` from :func:`parse_lspci_vmm`."""
    names = names or {}
    devices = []
    for entry in sorted(root.iterdir())[:MAX_DEVICES] if root.is_dir() else []:
        klass = _hex(read_text(entry / "class")[0], 6)
        named = names.get(entry.name, {})
        base = int(klass[:2], 16) if klass else None
        type_name = named.get("Class") or (PCI_BASE_CLASSES.get(base, f"PCI class {base:02x}")
                                          if base is not None else None)
        sub_vendor = _hex(read_text(entry / "subsystem_vendor")[0], 4)
        sub_device = _hex(read_text(entry / "subsystem_device")[0], 4)
        devices.append({
            "bus": "pci",
            "slot": entry.name,
            "vendor_id": _hex(read_text(entry / "vendor")[0], 4),
            "product_id": _hex(read_text(entry / "device")[0], 4),
            "class_id": klass[:4] if klass else None,
            "type": type_name.split(" [")[0] if type_name else None,
            "vendor": named.get("Vendor"),
            "name": named.get("Device"),
            "subsystem_id": f"{sub_vendor}:{sub_device}" if sub_vendor and sub_device else None,
            "revision": _hex(read_text(entry / "revision")[0], 2),
            "driver": _driver(entry),
        })
    return devices


def usb_devices(root: Path = USB_DEVICES) -> list[dict[str, Any]]:
    """USB devices (not interfaces: their names contain ':'), sorted by bus path."""
    devices = []
    for entry in sorted(root.iterdir())[:MAX_DEVICES] if root.is_dir() else []:
        if ":" in entry.name or not (entry / "idVendor").exists():
            continue
        klass = _hex(read_text(entry / "bDeviceClass")[0], 2)
        devices.append({
            "bus": "usb",
            "slot": entry.name,
            "vendor_id": _hex(read_text(entry / "idVendor")[0], 4),
            "product_id": _hex(read_text(entry / "idProduct")[0], 4),
            "class_id": klass,
            "type": None,
            "vendor": read_text(entry / "manufacturer")[0],
            "name": read_text(entry / "product")[0],
            "subsystem_id": None,
            "revision": read_text(entry / "bcdDevice")[0],
            "driver": _driver(entry),
        })
    return devices


def collect_controllers(pci_root: Path = PCI_DEVICES, usb_root: Path = USB_DEVICES) -> dict[str, Any]:
    """PCI functions then USB devices; names from lspci when it runs, else a reason."""
    unavailable: dict[str, str] = {}
    if not pci_root.is_dir():
        unavailable["pci"] = f"{pci_root} does not exist"
    if not usb_root.is_dir():
        unavailable["usb"] = f"{usb_root} does not exist"
    names: dict[str, dict[str, str]] = {}
    if pci_root.is_dir():
        result = run_command(["lspci", "-vmm", "-D"])
        if result.stdout is not None and result.reason is None:
            names = parse_lspci_vmm(result.stdout)
        else:
            unavailable["pci.names"] = f"{result.reason} (install pciutils for vendor and device names)"
    devices = pci_devices(pci_root, names) + usb_devices(usb_root)
    return {"devices": devices, "unavailable": unavailable}
