"""CMDB model (issue 17 part B): relationships, login history, networks, licences, vulnerabilities.

- ``cmdb_services`` and ``cmdb_relations``: business services and the relations an administrator
  declares (device *runs* service, service *depends on* service or device).
- ``cmdb_logins`` and ``cmdb_networks``: derived from each inventory (who was logged in, how often;
  which subnet and gateway each interface is on) — the primary user and the network relations.
- ``licences`` and ``licence_installs``: entitlements and the installations counted against them
  (kept per device on ingest, so counting is one indexed COUNT).
- ``vuln_advisories``, ``vuln_ids`` (id and aliases → advisory), ``vuln_affected`` (package ranges)
  and ``vuln_matches`` (device × advisory, re-matched on ingest and on every feed import).
"""

VERSION = 11

STATEMENTS = [
    """CREATE TABLE cmdb_services (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        owner TEXT NOT NULL DEFAULT '',
        created_at {real} NOT NULL,
        created_by TEXT NOT NULL
    )""",
    """CREATE TABLE cmdb_relations (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        source_type TEXT NOT NULL,
        source_id TEXT NOT NULL,
        target_type TEXT NOT NULL,
        target_id TEXT NOT NULL,
        created_at {real} NOT NULL,
        created_by TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX cmdb_relations_edge ON cmdb_relations (source_type, source_id, kind, target_type, target_id)",
    "CREATE INDEX cmdb_relations_target ON cmdb_relations (target_type, target_id)",
    """CREATE TABLE cmdb_logins (
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        username TEXT NOT NULL,
        first_seen {real} NOT NULL,
        last_seen {real} NOT NULL,
        observations INTEGER NOT NULL,
        PRIMARY KEY (device_id, username)
    )""",
    "CREATE INDEX cmdb_logins_user ON cmdb_logins (username)",
    """CREATE TABLE cmdb_networks (
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        interface TEXT NOT NULL,
        subnet TEXT NOT NULL,
        address TEXT NOT NULL,
        gateway TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (device_id, interface, subnet)
    )""",
    "CREATE INDEX cmdb_networks_subnet ON cmdb_networks (subnet)",
    """CREATE TABLE licences (
        id TEXT PRIMARY KEY,
        product TEXT NOT NULL,
        pattern TEXT NOT NULL,
        version_min TEXT NOT NULL DEFAULT '',
        version_max TEXT NOT NULL DEFAULT '',
        seats INTEGER NOT NULL,
        owner TEXT NOT NULL DEFAULT '',
        expires_at {real},
        notes TEXT NOT NULL DEFAULT '',
        created_at {real} NOT NULL,
        updated_at {real} NOT NULL
    )""",
    """CREATE TABLE licence_installs (
        licence_id TEXT NOT NULL REFERENCES licences(id) ON DELETE CASCADE,
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        package TEXT NOT NULL,
        version TEXT NOT NULL,
        PRIMARY KEY (licence_id, device_id)
    )""",
    "CREATE INDEX licence_installs_device ON licence_installs (device_id)",
    """CREATE TABLE vuln_advisories (
        id TEXT PRIMARY KEY,
        feed TEXT NOT NULL,
        severity TEXT NOT NULL,
        summary TEXT NOT NULL DEFAULT '',
        aliases TEXT NOT NULL DEFAULT '[]',
        imported_at {real} NOT NULL
    )""",
    "CREATE INDEX vuln_advisories_feed ON vuln_advisories (feed)",
    """CREATE TABLE vuln_ids (
        alias TEXT NOT NULL,
        advisory_id TEXT NOT NULL REFERENCES vuln_advisories(id) ON DELETE CASCADE,
        PRIMARY KEY (alias, advisory_id)
    )""",
    "CREATE INDEX vuln_ids_advisory ON vuln_ids (advisory_id)",
    """CREATE TABLE vuln_affected (
        id {id_pk},
        advisory_id TEXT NOT NULL REFERENCES vuln_advisories(id) ON DELETE CASCADE,
        ecosystem TEXT NOT NULL,
        os_release TEXT NOT NULL DEFAULT '',
        package TEXT NOT NULL,
        introduced TEXT NOT NULL DEFAULT '',
        fixed TEXT NOT NULL DEFAULT '',
        last_affected TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX vuln_affected_package ON vuln_affected (package)",
    "CREATE INDEX vuln_affected_advisory ON vuln_affected (advisory_id)",
    """CREATE TABLE vuln_matches (
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        advisory_id TEXT NOT NULL REFERENCES vuln_advisories(id) ON DELETE CASCADE,
        package TEXT NOT NULL,
        version TEXT NOT NULL,
        fixed TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (device_id, advisory_id, package)
    )""",
    "CREATE INDEX vuln_matches_advisory ON vuln_matches (advisory_id)",
]
