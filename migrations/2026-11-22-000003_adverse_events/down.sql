DROP TABLE sae_alert_attempts, sae_alerts, adverse_events;
