-- What flagged each anomaly event: the union of its windows' detectors ('model': TranAD's
-- score over its threshold; 'context': the context detector's distance; 'hold': the
-- telemetry value held still longer than training ever held it). Empty for events
-- stored before the column existed.
ALTER TABLE anomaly_events ADD COLUMN IF NOT EXISTS detected_by text[] NOT NULL DEFAULT '{}';

INSERT INTO schema_migrations (version) VALUES ('002_event_detectors') ON CONFLICT DO NOTHING;
