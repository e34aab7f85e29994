-- Enforcements keyed by their id alone, found by their event. Keep in step with
-- ../sqlite/0006_enforcements_by_event.sql.
--
-- An enforcement's id is derived from (rule, event) (host/src/pipeline), so the primary key
-- already makes one per pair; the UNIQUE (rule_ref, event_id) index only cost every insert. In
-- its place, an index on event_id: retention deletes enforcements by event and every deleted
-- event's foreign-key check looks its enforcements up, which without it scanned the table.
ALTER TABLE enforcements DROP CONSTRAINT enforcements_rule_ref_event_id_key;
CREATE INDEX enforcements_by_event ON enforcements (event_id);
