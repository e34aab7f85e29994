-- Several hosts on one database (spec section 7); SQLite has one host, whose lease and
-- ownership rows are the same as on PostgreSQL, so one code path serves both.
-- Keep in step with ../postgres/0005_hosts.sql.
--
-- A host holds a lease, renewed on the database's clock; it is live while `lease_until` is in
-- the future. `incarnation` tells one run of a host id from the next.
CREATE TABLE hosts (
    id           TEXT PRIMARY KEY,
    incarnation  TEXT NOT NULL,
    listen       TEXT NOT NULL,
    started_at   BIGINT NOT NULL,   -- Unix microseconds, database clock
    last_seen    BIGINT NOT NULL,
    lease_until  BIGINT NOT NULL
);

-- Who runs each sensor and each timer, with a fencing token: `generation` grows on every change
-- of owner, and every write an owner makes for that work checks (owner, generation) in its own
-- transaction. `owner` is NULL once released.
CREATE TABLE ownership (
    kind        TEXT NOT NULL,      -- `sensor` or `timer`
    item        TEXT NOT NULL,      -- sensor ref or timer rule ref
    owner       TEXT,
    generation  BIGINT NOT NULL DEFAULT 0,
    changed_at  BIGINT NOT NULL,
    PRIMARY KEY (kind, item)
);
CREATE INDEX ownership_by_owner ON ownership (owner);

-- The host publishing an outbox row; another may take the row once that host's lease ended.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;

-- How each sensor is doing, written by its owner after every poll (under its fence), so every
-- host shows the same and a new owner goes on from it: counters continue, a quarantine holds.
CREATE TABLE sensor_status (
    sensor_ref            TEXT PRIMARY KEY,
    state                 TEXT NOT NULL,     -- idle, running, backing_off, quarantined
    last_error            TEXT,
    last_failure_reason   TEXT,
    consecutive_failures  BIGINT NOT NULL,
    polls                 BIGINT NOT NULL,
    failures              BIGINT NOT NULL,
    events                BIGINT NOT NULL,
    fuel_used             BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);

-- Packs across hosts: each host's copy of each pack (a digest of its files), and the copy
-- registered last (by each host as it starts, and by each pack reload asked for on it). A
-- sensor runs only on hosts whose copy of its pack is the registered one.
CREATE TABLE pack_versions (
    pack_ref       TEXT PRIMARY KEY,
    fingerprint    TEXT NOT NULL,
    registered_by  TEXT NOT NULL,
    registered_at  BIGINT NOT NULL
);
CREATE TABLE host_packs (
    host_id      TEXT NOT NULL,
    pack_ref     TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    PRIMARY KEY (host_id, pack_ref)
);
