"""Unpack a verified artifact into ``versions/<v>`` — nothing outside it, nothing unexpected in it.

Formats: a wheel (``.whl``, what ``pip wheel``/``python -m build`` make of this repository) or a
``.tar.gz`` of the same top-level packages. Either carries the helpline packages only: the launcher
runs them with the installation's interpreter and its site-packages, so a release that changes the
agent's dependencies ships as a package (.deb) instead. The archive is unpacked into a temporary
directory beside the target and renamed into place; members with absolute paths, ``..``, links or
device files are refused, and so is an archive that unpacks to more than :data:`MAX_UNPACKED` bytes
or :data:`MAX_MEMBERS` files. The unpacked tree must be an agent (``helpline/cli.py``) that declares
the version the manifest signed (``common/version.py``).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

MAX_UNPACKED = 512 * 1024 * 1024
MAX_MEMBERS = 20000
FORMATS = (".whl", ".tar.gz", ".tgz")
_VERSION = re.compile(r'^__version__\s*=\s*"([^"]+)"\s*$', re.MULTILINE)


class InstallRefused(Exception):
    """The artifact is not an installable agent of the signed version (the device refuses it)."""


def supported(name: str) -> bool:
    return name.endswith(FORMATS)


def _member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or name.startswith("/"):
        raise InstallRefused(f"archive member {name[:100]!r} would land outside the version directory")
    return path


def _unpack_zip(archive: Path, into: Path) -> None:
    with zipfile.ZipFile(archive) as zipped:
        members = zipped.infolist()
        if len(members) > MAX_MEMBERS:
            raise InstallRefused(f"the archive has more than {MAX_MEMBERS} members")
        if sum(m.file_size for m in members) > MAX_UNPACKED:
            raise InstallRefused(f"the archive unpacks to more than {MAX_UNPACKED} bytes")
        for member in members:
            _member_path(member.filename)
            kind = stat.S_IFMT(member.external_attr >> 16)  # 0: no type recorded (zipfile's own writestr)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise InstallRefused(f"archive member {member.filename[:100]!r} is not a plain file")
        zipped.extractall(into)  # noqa: S202 - every member's path and type checked above


def _unpack_tar(archive: Path, into: Path) -> None:
    with tarfile.open(archive, "r:gz") as tarred:
        members = tarred.getmembers()
        if len(members) > MAX_MEMBERS:
            raise InstallRefused(f"the archive has more than {MAX_MEMBERS} members")
        if sum(m.size for m in members) > MAX_UNPACKED:
            raise InstallRefused(f"the archive unpacks to more than {MAX_UNPACKED} bytes")
        for member in members:
            _member_path(member.name)
            if not (member.isfile() or member.isdir()):
                raise InstallRefused(f"archive member {member.name[:100]!r} is not a plain file")
        if hasattr(tarfile, "data_filter"):
            tarred.extractall(into, filter="data")
        else:  # an interpreter from before PEP 706's filters (Debian 12's python3 is 3.11.2): the same by hand
            tarred.extractall(into, members=[_as_data(member) for member in members])  # noqa: S202 - checked above


def _as_data(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """What tarfile's "data" filter does to a plain file or directory (both checked already): no owner taken from
    the archive, no setuid/setgid/sticky or group/other write bits, files readable and writable by their owner."""
    member = copy.copy(member)
    member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
    if member.isdir():
        member.mode = 0o755
    else:
        mode = (member.mode | 0o600) & 0o755
        member.mode = mode if mode & 0o100 else mode & ~0o011
    return member


def declared_version(tree: Path) -> str | None:
    try:
        text = (tree / "common" / "version.py").read_text()
    except (OSError, UnicodeDecodeError):
        return None
    match = _VERSION.search(text)
    return match[1] if match else None


def unpack(archive: Path, name: str, version: str, target: Path) -> None:
    """Unpack ``archive`` (named ``name`` in the manifest) as version ``version`` at ``target``."""
    staging = target.with_name(f".{target.name}.unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o755, parents=True)
    try:
        try:
            if name.endswith(".whl"):
                _unpack_zip(archive, staging)
            elif name.endswith((".tar.gz", ".tgz")):
                _unpack_tar(archive, staging)
            else:
                raise InstallRefused(f"{name}: not a format this agent installs ({', '.join(FORMATS)})")
        except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
            raise InstallRefused(f"{name} is not a readable archive: {exc}") from exc
        if not (staging / "helpline" / "cli.py").is_file():
            raise InstallRefused(f"{name} holds no agent (helpline/cli.py is missing)")
        claimed = declared_version(staging)
        if claimed != version:
            raise InstallRefused(f"{name} declares version {claimed!r}, the manifest signed {version}")
        shutil.rmtree(target, ignore_errors=True)  # a failed earlier attempt at the same version
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def prune(versions: Path, keep: set[str]) -> list[str]:
    """Remove installed versions not in ``keep`` (the running one, the new one); returns what was removed."""
    removed: list[str] = []
    if not versions.is_dir():
        return removed
    for entry in sorted(versions.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed
