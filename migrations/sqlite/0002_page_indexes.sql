-- Lists page newest first by id (UUIDv7, so in time order). Filtered by trigger or rule, an
-- index in that order lets a page be read in order and stop after `limit` rows; the indexes on
-- (.., created_at) made the planner sort every match first (SQLite always, PostgreSQL without
-- fresh statistics), so they are replaced.
DROP INDEX events_by_trigger;
CREATE INDEX events_by_trigger ON events (trigger_ref, id);
DROP INDEX enforcements_by_rule;
CREATE INDEX enforcements_by_rule ON enforcements (rule_ref, id);
CREATE INDEX enforcements_by_trigger ON enforcements (trigger_ref, id);
