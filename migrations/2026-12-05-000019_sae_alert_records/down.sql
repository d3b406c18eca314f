-- Alerts of form records cannot be kept without their column: they go with it.
DELETE FROM sae_alert_attempts
    WHERE alert_id IN (SELECT id FROM sae_alerts WHERE form_record_id IS NOT NULL);
DELETE FROM sae_alerts WHERE form_record_id IS NOT NULL;
ALTER TABLE sae_alerts DROP CONSTRAINT sae_alerts_one_record;
ALTER TABLE sae_alerts DROP COLUMN form_record_id;
ALTER TABLE sae_alerts ALTER COLUMN adverse_event_id SET NOT NULL;
