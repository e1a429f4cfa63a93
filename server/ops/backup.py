"""``helpline admin backup FILE`` / ``restore FILE``: what a node needs to come back.

The archive (gzip'd tar, mode 0600: it holds the node's private keys) has ``manifest.json``
first — format, Helpline version, engine, applied migrations, and a SHA-256 and size per member —
then:

* ``database/helpline.db``: a consistent SQLite snapshot taken with the online backup API (in one
  step: one read transaction) while the server runs, or ``database/helpline.pgdump`` from
  ``pg_dump --format=custom`` (PostgreSQL's client tools must be installed: Debian's postgresql-client);
* ``pki/``: the node's TLS files (org CA certificate, issuing intermediate and server certificate
  with their keys) — never a root key (``ca.key``): the offline roots stay offline;
* ``state/``: the rest of the data directory (the audit anchor, peppers, update releases, SIEM
  cursors …) except the database files, recordings and diagnostics artifacts (bulky, kept under
  their own retention: copy those directories with rsync if they matter) and the lock file;
* ``config/``: the TOML file given with ``--config``, if any.

Restore checks every checksum and the version first, refuses while a server runs on the data
directory (:mod:`.lock`) and refuses a data directory that already has a database or PKI, or a
PostgreSQL database whose ``schema_migrations`` has rows (other nodes may run on it), unless
asked to replace them. SQLite lands at the configured path, PostgreSQL through ``pg_restore
--clean --if-exists`` into the configured database. The configuration file is written beside the
data directory's state as ``restored-config/`` for the operator to put back: it is never put over
a live /etc file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from certs.pki import PkiPaths
from common.files import private_directory
from common.version import __version__
from server.config import ServerConfig
from server.store.migrate import discover

from . import lock

FORMAT = 1
MANIFEST = "manifest.json"
#: Data-directory entries that are not copied (the database is snapshotted on its own).
SKIPPED = {"recordings", "artifacts", lock.LOCK_FILE}
#: Never in a backup: the TLS root's key (a PKI directory from before intermediates holds it).
ROOT_KEYS = {"ca.key", "root.key"}

Progress = Callable[[str], None]


class BackupError(Exception):
    """The backup or restore cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Member:
    name: str
    path: Path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sqlite_path(config: ServerConfig) -> Path | None:
    url = config.db_url
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def _pg_env(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment carrying it (never on a command line)."""
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        netloc = parts.netloc.rsplit("@", 1)
        user = (parts.username or "") + "@" if parts.username else ""
        parts = parts._replace(netloc=user + netloc[-1])
    return urlunsplit(parts), env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed: PostgreSQL backups need its client tools "
                          "(Debian: apt-get install postgresql-client)")
    return found


def _snapshot_sqlite(source: Path, target: Path, progress: Progress) -> list[int]:
    if not source.exists():
        raise BackupError(f"no database at {source}")
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    last = [0.0]

    def step(_status: int, remaining: int, total: int) -> None:
        if time.monotonic() - last[0] >= 1.0 or remaining == 0:
            last[0] = time.monotonic()
            progress(f"database: {total - remaining}/{total} pages copied")

    try:
        # One step, in one read transaction: stepping a few pages at a time restarts from page 1 whenever
        # another connection writes between steps, so on a busy server it might never finish. Writers are
        # not blocked meanwhile (WAL: the read transaction sees its snapshot while they append).
        src.backup(dst, pages=-1, progress=step)
        versions = [int(r[0]) for r in dst.execute("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        dst.close()
        src.close()
    return versions


def _snapshot_postgres(url: str, target: Path, progress: Progress) -> list[int]:
    clean, env = _pg_env(url)
    progress("database: pg_dump (PostgreSQL, custom format) …")
    done = subprocess.run([_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(target), "--dbname", clean],
                          env=env, capture_output=True, text=True, timeout=6 * 3600)
    if done.returncode != 0:
        raise BackupError(f"pg_dump failed: {done.stderr.strip()[-500:]}")
    query = subprocess.run([_tool("psql"), "--no-psqlrc", "-At", "--dbname", clean, "-c",
                            "SELECT version FROM schema_migrations ORDER BY version"],
                           env=env, capture_output=True, text=True, timeout=300)
    if query.returncode != 0:
        raise BackupError(f"psql failed: {query.stderr.strip()[-500:]}")
    return [int(v) for v in query.stdout.split()]


def _postgres_in_use(url: str) -> bool:
    """True when the target database already holds a Helpline schema with applied migrations.

    A fresh host's data directory says nothing about a shared database that other nodes run on:
    ``pg_restore --clean`` would wipe it, so restore asks for ``--replace`` then too."""
    clean, env = _pg_env(url)

    def query(sql: str) -> str:
        done = subprocess.run([_tool("psql"), "--no-psqlrc", "-At", "-v", "ON_ERROR_STOP=1", "--dbname", clean,
                               "-c", sql], env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise BackupError(f"psql failed: {done.stderr.strip()[-500:]}")
        return done.stdout.strip()

    if query("SELECT to_regclass('schema_migrations') IS NOT NULL") != "t":
        return False
    return query("SELECT EXISTS (SELECT 1 FROM schema_migrations)") == "t"


def _state_members(config: ServerConfig) -> Iterator[Member]:
    pki = PkiPaths.from_dir(config.pki_path)
    for path in pki.files():
        if path.is_file():
            yield Member(f"pki/{path.name}", path)
    data = config.data_dir
    database = _sqlite_path(config)
    database_files = {database, *(database.with_name(database.name + s) for s in ("-wal", "-shm", "-journal"))} \
        if database is not None else set()
    for root, dirs, files in os.walk(data):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not (here == data and d in SKIPPED)
                         and (here / d).resolve() != config.pki_path.resolve())
        for name in sorted(files):
            path = here / name
            if (here == data and name in SKIPPED) or path in database_files or name in ROOT_KEYS \
                    or not path.is_file() or path.is_symlink():
                continue
            yield Member("state/" + path.relative_to(data).as_posix(), path)


def backup(config: ServerConfig, out: Path, *, config_file: Path | None = None,
           progress: Progress = lambda _m: None) -> dict[str, Any]:
    """Write the archive to ``out`` (atomically, 0600); return its manifest."""
    with tempfile.TemporaryDirectory(prefix="helpline-backup-") as tmp:
        work = Path(tmp)
        sqlite_path = _sqlite_path(config)
        if sqlite_path is not None:
            engine, db_member = "sqlite", Member("database/helpline.db", work / "helpline.db")
            versions = _snapshot_sqlite(sqlite_path, db_member.path, progress)
        else:
            engine, db_member = "postgresql", Member("database/helpline.pgdump", work / "helpline.pgdump")
            versions = _snapshot_postgres(config.db_url, db_member.path, progress)
        members = [db_member, *_state_members(config)]
        if config_file is not None:
            members.append(Member(f"config/{config_file.name}", config_file))
        progress(f"checksums: {len(members)} files …")
        files = {m.name: {"sha256": _sha256(m.path), "size": m.path.stat().st_size} for m in members}
        manifest = {"format": FORMAT, "helpline_version": __version__, "created_at": time.time(),
                    "engine": engine, "migrations": versions, "files": files}
        partial = out.with_name(f".{out.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
                for i, member in enumerate(members, 1):
                    if i == 1 or i % 50 == 0 or i == len(members):
                        progress(f"archive: {i}/{len(members)} files")
                    tar.add(member.path, arcname=member.name, recursive=False)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(partial, out)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
    return manifest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or len(path.parts) < 2 \
            or path.parts[0] not in ("database", "pki", "state", "config"):
        raise BackupError(f"the archive names an unexpected path: {name!r}")
    return path


def read_manifest(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive, "r:gz") as tar:
        first = tar.next()
        if first is None or first.name != MANIFEST:
            raise BackupError(f"{archive} is not a Helpline backup (no manifest first)")
        extracted = tar.extractfile(first)
        if extracted is None or first.size > 16 * 1024 * 1024:
            raise BackupError("the manifest is unreadable")
        manifest: dict[str, Any] = json.loads(extracted.read())
    return manifest


def check_manifest(manifest: dict[str, Any]) -> None:
    """Refuse an archive of another format or version, or with migrations this code does not know."""
    if manifest.get("format") != FORMAT:
        raise BackupError(f"backup format {manifest.get('format')!r}; this version reads {FORMAT}")
    if manifest.get("helpline_version") != __version__:
        raise BackupError(f"the backup is of Helpline {manifest.get('helpline_version')}, this is {__version__}: "
                          "restore it with the same version, then upgrade")
    unknown = set(manifest.get("migrations", [])) - {m.version for m in discover()}
    if unknown:
        raise BackupError(f"the backup's database has migrations this version does not know: {sorted(unknown)}")


def restore(config: ServerConfig, archive: Path, *, replace: bool = False,
            progress: Progress = lambda _m: None) -> dict[str, Any]:
    """Verify ``archive`` whole, then put it back under ``config``'s data directory and database."""
    manifest = read_manifest(archive)
    check_manifest(manifest)
    files: dict[str, dict[str, Any]] = manifest["files"]
    with lock.exclusive(config.data_dir), tempfile.TemporaryDirectory(prefix="helpline-restore-",
                                                                      dir=config.data_dir) as tmp:
        work = Path(tmp)
        progress(f"verifying {len(files)} files …")
        with tarfile.open(archive, "r:gz") as tar:
            seen: set[str] = set()
            for info in tar:
                if info.name == MANIFEST:
                    continue
                if info.name not in files or not info.isfile() or info.name in seen:
                    raise BackupError(f"the archive holds {info.name!r}, which its manifest does not list")
                seen.add(info.name)
                target = work / _safe_name(info.name)
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                source = tar.extractfile(info)
                assert source is not None
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out)
                expected = files[info.name]
                if target.stat().st_size != expected["size"] or _sha256(target) != expected["sha256"]:
                    raise BackupError(f"{info.name}: checksum mismatch: the archive is damaged")
            missing = set(files) - seen
            if missing:
                raise BackupError(f"the archive lacks {sorted(missing)}")
        _put_back(config, work, manifest, replace, progress)
    return manifest


def _put_back(config: ServerConfig, work: Path, manifest: dict[str, Any], replace: bool, progress: Progress) -> None:
    sqlite_path = _sqlite_path(config)
    engine = "sqlite" if sqlite_path is not None else "postgresql"
    if manifest["engine"] != engine:
        raise BackupError(f"the backup holds a {manifest['engine']} database; this configuration uses {engine}")
    pki = PkiPaths.from_dir(config.pki_path)
    present = [str(p) for p in (sqlite_path, pki.server_key) if p is not None and p.exists()]
    if sqlite_path is None and _postgres_in_use(config.db_url):
        present.append("a Helpline database (schema_migrations has rows; other nodes may be using it)")
    if present and not replace:
        raise BackupError(f"{', '.join(present)} already there: restore into an empty data directory, "
                          "or pass --replace to overwrite")
    private_directory(config.data_dir)
    progress("restoring the node's PKI and state …")
    for path in sorted(work.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(work)
        top, rest = relative.parts[0], Path(*relative.parts[1:])
        if top == "pki":
            private_directory(config.pki_path)
            target = config.pki_path / rest
        elif top == "state":
            target = config.data_dir / rest
        elif top == "config":
            target = config.data_dir / "restored-config" / rest
        else:
            continue
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = 0o644 if target.suffix == ".pem" else 0o600
        shutil.copyfile(path, target)
        os.chmod(target, mode)
    if sqlite_path is not None:
        progress(f"database: SQLite to {sqlite_path}")
        for companion in (sqlite_path.with_name(sqlite_path.name + s) for s in ("-wal", "-shm")):
            companion.unlink(missing_ok=True)
        sqlite_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = sqlite_path.with_name(f".{sqlite_path.name}.restoring")
        shutil.copyfile(work / "database" / "helpline.db", partial)
        os.chmod(partial, 0o600)
        os.replace(partial, sqlite_path)
    else:
        clean, env = _pg_env(config.db_url)
        progress("database: pg_restore --clean --if-exists (PostgreSQL) …")
        done = subprocess.run([_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction",
                               "--dbname", clean, str(work / "database" / "helpline.pgdump")],
                              env=env, capture_output=True, text=True, timeout=6 * 3600)
        if done.returncode != 0:
            raise BackupError(f"pg_restore failed: {done.stderr.strip()[-500:]}")
