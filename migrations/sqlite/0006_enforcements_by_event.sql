-- Enforcements keyed by their id alone, found by their event. Keep in step with
-- ../postgres/0006_enforcements_by_event.sql.
--
-- An enforcement's id is derived from (rule, event) (host/src/pipeline), so the primary key
-- already makes one per pair; the UNIQUE (rule_ref, event_id) index only cost every insert. In
-- its place, an index on event_id: retention deletes enforcements by event and every deleted
-- event's foreign-key check looks its enforcements up, which without it scanned the table.
-- SQLite drops a table constraint only by rebuilding the table (nothing refers to it).
CREATE TABLE enforcements_0006 (
    id           TEXT PRIMARY KEY,
    rule_ref     TEXT NOT NULL,
    event_id     TEXT NOT NULL REFERENCES events (id),
    trigger_ref  TEXT NOT NULL,
    action_ref   TEXT NOT NULL,
    parameters   TEXT,
    status       TEXT NOT NULL,
    error        TEXT,
    created_at   BIGINT NOT NULL
);
INSERT INTO enforcements_0006 (id, rule_ref, event_id, trigger_ref, action_ref, parameters, status, error, created_at)
    SELECT id, rule_ref, event_id, trigger_ref, action_ref, parameters, status, error, created_at FROM enforcements;
DROP TABLE enforcements;
ALTER TABLE enforcements_0006 RENAME TO enforcements;
CREATE INDEX enforcements_by_time ON enforcements (created_at);
CREATE INDEX enforcements_by_rule ON enforcements (rule_ref, id);
CREATE INDEX enforcements_by_trigger ON enforcements (trigger_ref, id);
CREATE INDEX enforcements_by_event ON enforcements (event_id);
