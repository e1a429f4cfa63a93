"""CMDB depth (issue 17), two fixes measured on PostgreSQL at 10,000 devices:

- ``software.source_package`` / ``source_version``: the Debian Security Tracker and OSV's Debian
  entries name *source* packages (``openssl``), agents report binaries (``libssl3``); the agent now
  sends dpkg's ``${source:Package}``/``${source:Version}`` and vulnerabilities match on them
  (:mod:`server.cmdb.vulns`). Rows stored before take their own name and version, as before.
- ``cmdb_relations (target_type, target_id, kind)``: the impact walk follows ``depends_on`` by
  target; the old ``(target_type, target_id)`` index read every ``runs`` row of a service too
  (100 heap rows per service on the benchmark's fleet). It replaces the old index (a prefix of it).
"""

VERSION = 15

#: Destructive (tests/test_migrations_contract.py): the index dropped is replaced in the same migration by
#: cmdb_relations_target_kind, which leads with the same columns; no code names an index.
SAFE_BECAUSE = "an index replaced by a wider one in the same migration; only the planner uses it"

STATEMENTS = [
    "ALTER TABLE software ADD COLUMN source_package TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE software ADD COLUMN source_version TEXT NOT NULL DEFAULT ''",
    "UPDATE software SET source_package = name, source_version = version",
    "CREATE INDEX software_source_package ON software (source_package)",
    "CREATE INDEX cmdb_relations_target_kind ON cmdb_relations (target_type, target_id, kind)",
    "DROP INDEX cmdb_relations_target",
]
