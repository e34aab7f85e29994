-- An event may be for one rule instance only (a timer's rule, or the rule a sensor payload
-- names); NULL means every rule on its trigger.
ALTER TABLE events ADD COLUMN rule_ref TEXT;
-- Pack, trigger and sensor facts live in the packs on disk and in the host's pack catalog;
-- these tables were never written.
DROP TABLE packs;
DROP TABLE triggers;
DROP TABLE sensors;
