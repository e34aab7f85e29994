-- Attune sensor host schema, PostgreSQL dialect. Keep in step with ../sqlite/0001_init.sql:
-- same tables, columns and version; only types and autoincrement spelling differ.
-- Times are Unix microseconds (BIGINT); JSON documents are TEXT; ids are UUIDv7 text, unique
-- across hosts and ordered by creation time.

CREATE TABLE packs (
    ref          TEXT PRIMARY KEY,
    version      TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    config       TEXT NOT NULL DEFAULT '{}',
    updated_at   BIGINT NOT NULL
);

CREATE TABLE triggers (
    ref             TEXT PRIMARY KEY,
    pack_ref        TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    payload_schema  TEXT,
    param_schema    TEXT
);

CREATE TABLE sensors (
    ref          TEXT PRIMARY KEY,
    pack_ref     TEXT NOT NULL,
    triggers     TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'stopped',
    last_error   TEXT,
    polls        BIGINT NOT NULL DEFAULT 0,
    fuel_used    BIGINT NOT NULL DEFAULT 0,
    events       BIGINT NOT NULL DEFAULT 0,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE rules (
    ref          TEXT PRIMARY KEY,
    pack_ref     TEXT,
    trigger_ref  TEXT NOT NULL,
    enabled      BOOLEAN NOT NULL,
    spec         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX rules_by_trigger ON rules (trigger_ref);

CREATE TABLE events (
    id           TEXT PRIMARY KEY,
    trigger_ref  TEXT NOT NULL,
    source       TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX events_by_time ON events (created_at);
CREATE INDEX events_by_trigger ON events (trigger_ref, created_at);

CREATE TABLE enforcements (
    id           TEXT PRIMARY KEY,
    rule_ref     TEXT NOT NULL,
    event_id     TEXT NOT NULL REFERENCES events (id),
    trigger_ref  TEXT NOT NULL,
    action_ref   TEXT NOT NULL,
    parameters   TEXT,
    status       TEXT NOT NULL,
    error        TEXT,
    created_at   BIGINT NOT NULL,
    UNIQUE (rule_ref, event_id)
);
CREATE INDEX enforcements_by_time ON enforcements (created_at);
CREATE INDEX enforcements_by_rule ON enforcements (rule_ref, created_at);

CREATE TABLE outbox (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id    TEXT NOT NULL UNIQUE,
    routing_key   TEXT NOT NULL,
    body          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    published_at  BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE sensor_state (
    sensor_ref  TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (sensor_ref, key)
);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    scope         TEXT NOT NULL,
    triggers      TEXT NOT NULL DEFAULT '[]',
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT
);

CREATE TABLE timer_state (
    rule_ref           TEXT PRIMARY KEY,
    next_fire_at       BIGINT,
    last_fire_at       BIGINT,
    last_scheduled_at  BIGINT,
    execution_count    BIGINT NOT NULL DEFAULT 0,
    updated_at         BIGINT NOT NULL
);
