"""CMDB: current inventory per section, change history, installed software, health series,
rollups, alerts, alert rule overrides, webhook deliveries."""

VERSION = 2

STATEMENTS = [
    """CREATE TABLE inventory_sections (
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        section TEXT NOT NULL,
        data TEXT NOT NULL,
        checksum TEXT NOT NULL,
        updated_at {real} NOT NULL,
        PRIMARY KEY (device_id, section)
    )""",
    """CREATE TABLE inventory_changes (
        id {id_pk},
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        ts {real} NOT NULL,
        section TEXT NOT NULL,
        path TEXT NOT NULL,
        change TEXT NOT NULL,
        old_value TEXT,
        new_value TEXT
    )""",
    "CREATE INDEX inventory_changes_device_ts ON inventory_changes (device_id, ts)",
    """CREATE TABLE software (
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        arch TEXT NOT NULL,
        source TEXT NOT NULL,
        vendor TEXT NOT NULL,
        PRIMARY KEY (device_id, name, arch)
    )""",
    "CREATE INDEX software_name ON software (name, version)",
    """CREATE TABLE cmdb_devices (
        device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
        os TEXT NOT NULL DEFAULT '',
        ip TEXT NOT NULL DEFAULT '',
        serial TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        alerts_open INTEGER NOT NULL DEFAULT 0,
        reboot_pending_since {real},
        battery_health {real},
        last_inventory {real}
    )""",
    "CREATE INDEX devices_hostname ON devices (hostname)",
    "CREATE INDEX devices_last_seen ON devices (last_seen)",
    "CREATE INDEX cmdb_devices_alerts ON cmdb_devices (alerts_open)",
    """CREATE TABLE health_samples (
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        seq {bigint} NOT NULL,
        ts {real} NOT NULL,
        cpu {real},
        mem {real},
        swap {real},
        load1 {real},
        disk_min_free {real},
        battery {real},
        net_rx {real},
        net_tx {real},
        metrics TEXT NOT NULL,
        PRIMARY KEY (device_id, seq)
    )""",
    "CREATE INDEX health_samples_device_ts ON health_samples (device_id, ts)",
    "CREATE INDEX health_samples_ts ON health_samples (ts)",
    """CREATE TABLE health_rollups (
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        bucket {real} NOT NULL,
        n INTEGER NOT NULL,
        cpu_sum {real} NOT NULL,
        cpu_n INTEGER NOT NULL,
        cpu_max {real},
        mem_sum {real} NOT NULL,
        mem_n INTEGER NOT NULL,
        mem_max {real},
        disk_min_free {real},
        PRIMARY KEY (device_id, bucket)
    )""",
    "CREATE INDEX health_rollups_bucket ON health_rollups (bucket)",
    """CREATE TABLE health_gaps (
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        from_seq {bigint} NOT NULL,
        to_seq {bigint} NOT NULL,
        dropped {bigint} NOT NULL,
        reported_at {real} NOT NULL,
        PRIMARY KEY (device_id, from_seq)
    )""",
    """CREATE TABLE health_state (
        device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
        max_seq {bigint} NOT NULL,
        last_ts {real} NOT NULL
    )""",
    """CREATE TABLE alerts (
        id {id_pk},
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        rule TEXT NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        severity TEXT NOT NULL,
        status TEXT NOT NULL,
        message TEXT NOT NULL,
        opened_at {real} NOT NULL,
        updated_at {real} NOT NULL,
        resolved_at {real}
    )""",
    "CREATE UNIQUE INDEX alerts_one_open ON alerts (device_id, rule, subject) WHERE status = 'open'",
    "CREATE INDEX alerts_status ON alerts (status, opened_at)",
    """CREATE TABLE cmdb_settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE webhook_deliveries (
        id {id_pk},
        url TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at {real} NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at {real} NOT NULL,
        delivered_at {real},
        failed_at {real},
        last_error TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX webhook_due ON webhook_deliveries (delivered_at, failed_at, next_attempt_at)",
]
