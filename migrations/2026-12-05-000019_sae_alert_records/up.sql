-- A serious adverse event alert points at the record that raised it: a row of today's
-- adverse_events, or a form record of the engine (a form bound to the sae_alert rule).
-- Exactly one of the two.
ALTER TABLE sae_alerts ALTER COLUMN adverse_event_id DROP NOT NULL;
ALTER TABLE sae_alerts ADD COLUMN form_record_id bigint REFERENCES form_records (id);
ALTER TABLE sae_alerts ADD CONSTRAINT sae_alerts_one_record
    CHECK (num_nonnulls(adverse_event_id, form_record_id) = 1);
