"""Virtualization: the hypervisor under the machine and the container around the agent.

``systemd-detect-virt --vm`` and ``--container`` are asked separately, because a container
inside a VM (this CI: docker in kvm) is both and plain ``systemd-detect-virt`` names only the
innermost. Without systemd the same questions are answered from the evidence it reads itself:
``/.dockerenv``, ``/run/.containerenv``, ``container=`` in PID 1's environment, and the
``hypervisor`` CPU flag with the DMI vendor/product for the VM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.collectors._util import read_text, run_command

CPUINFO = Path("/proc/cpuinfo")
DMI_DIR = Path("/sys/class/dmi/id")
ROOT = Path("/")
PID1_ENVIRON = Path("/proc/1/environ")

# DMI sys_vendor / product_name substrings → systemd-detect-virt's names.
DMI_HYPERVISORS = (
    ("KVM", "kvm"), ("QEMU", "qemu"), ("VMware", "vmware"), ("VirtualBox", "oracle"), ("innotek", "oracle"),
    ("Microsoft Corporation", "microsoft"), ("Xen", "xen"), ("Amazon EC2", "amazon"), ("Google", "google"),
    ("Parallels", "parallels"), ("bochs", "bochs"), ("BHYVE", "bhyve"),
)


def _detect(flag: str) -> tuple[str | None, str | None]:
    """systemd-detect-virt's answer for ``--vm``/``--container``: (name or None for "none", reason)."""
    result = run_command(["systemd-detect-virt", flag], ok_codes=(0, 1))
    if result.stdout is None:
        return None, result.reason
    answer = result.stdout.strip()
    if result.returncode == 1 or answer in ("", "none"):
        return None, None
    return answer, None


def container_from_files(root: Path = ROOT, environ: Path = PID1_ENVIRON) -> str | None:
    """Container type from the files container runtimes leave, or None."""
    if (root / ".dockerenv").exists():
        return "docker"
    if (root / "run" / ".containerenv").exists():
        return "podman"
    try:
        env = environ.read_bytes().split(b"\0")
    except OSError:
        env = []
    for item in env:
        if item.startswith(b"container="):
            return item.split(b"=", 1)[1].decode("utf-8", errors="replace") or None
    return None


def vm_from_files(cpuinfo: Path = CPUINFO, dmi_dir: Path = DMI_DIR) -> str | None:
    """Hypervisor from DMI strings, else ``"vm-other"`` when the CPU says ``hypervisor``, else None."""
    vendor = " ".join(filter(None, (read_text(dmi_dir / n)[0] for n in ("sys_vendor", "product_name", "bios_vendor"))))
    for needle, name in DMI_HYPERVISORS:
        if needle.lower() in vendor.lower():
            return name
    text, _ = read_text(cpuinfo)
    for line in (text or "").splitlines():
        if line.startswith("flags") and " hypervisor" in line:
            return "vm-other"
    return None


def collect_virtualization() -> dict[str, Any]:
    """``vm`` and ``container`` names (None: bare metal / not in one) and how they were found."""
    unavailable: dict[str, str] = {}
    vm, vm_reason = _detect("--vm")
    container, container_reason = _detect("--container")
    source = "systemd-detect-virt"
    if vm_reason or container_reason:
        source = "files"
        unavailable["systemd-detect-virt"] = vm_reason or container_reason or ""
        vm, container = vm_from_files(), container_from_files()
    return {
        "vm": vm,
        "container": container,
        "is_virtual": vm is not None or container is not None,
        "source": source,
        "unavailable": unavailable,
    }
