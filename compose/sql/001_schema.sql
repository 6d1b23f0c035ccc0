-- smap-bench schema, version 001: fleet configuration, model registry, anomaly events.
-- Idempotent: applied by `smap-bench up` (smap_bench/db.py) and by the PostgreSQL
-- image's init directory in compose/docker-compose.yml.

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS subsystems (
    name        text PRIMARY KEY,
    code        char(1) NOT NULL UNIQUE,
    description text NOT NULL
);

INSERT INTO subsystems (name, code, description) VALUES
    ('ACS',  'A', 'Attitude control'),
    ('Data', 'D', 'Command and data handling'),
    ('EPS',  'E', 'Electrical power'),
    ('FSW',  'F', 'Flight software'),
    ('PS',   'P', 'Propulsion'),
    ('SS',   'S', 'Structures and mechanisms'),
    ('TCS',  'T', 'Thermal control')
ON CONFLICT (name) DO NOTHING;

CREATE TABLE IF NOT EXISTS satellites (
    satellite_id text PRIMARY KEY,
    display_name text,
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Which SMAP channel each (satellite, subsystem) stream replays, and so which model scores it.
CREATE TABLE IF NOT EXISTS channel_assignment (
    satellite_id text NOT NULL REFERENCES satellites (satellite_id) ON DELETE CASCADE,
    subsystem    text NOT NULL REFERENCES subsystems (name),
    channel      text NOT NULL,
    model_name   text NOT NULL,
    assigned_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (satellite_id, subsystem)
);

-- Model registry: one row per (model, version); metadata.json of the Triton repository.
CREATE TABLE IF NOT EXISTS models (
    model_name    text NOT NULL,
    version       integer NOT NULL DEFAULT 1,
    channel       text NOT NULL,
    threshold     double precision NOT NULL,
    onnx_sha256   text NOT NULL,
    metadata      jsonb NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_name, version)
);

-- Anomaly events: consecutive anomalous windows of one stream, written idempotently.
CREATE TABLE IF NOT EXISTS anomaly_events (
    event_id           bigserial PRIMARY KEY,
    satellite_id       text NOT NULL,
    subsystem          text NOT NULL REFERENCES subsystems (name),
    model_name         text NOT NULL,
    loop               integer NOT NULL,
    start_record_index integer NOT NULL,
    end_record_index   integer NOT NULL,
    start_time         timestamptz NOT NULL,
    end_time           timestamptz NOT NULL,
    peak_score         double precision NOT NULL,
    threshold          double precision NOT NULL,
    top_features       jsonb NOT NULL DEFAULT '[]',
    state              text NOT NULL DEFAULT 'open'
                       CHECK (state IN ('open', 'acknowledged', 'shelved', 'cleared')),
    shelved_until      timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (satellite_id, subsystem, loop, start_record_index)
);
CREATE INDEX IF NOT EXISTS anomaly_events_stream_time
    ON anomaly_events (satellite_id, subsystem, start_time);
CREATE INDEX IF NOT EXISTS anomaly_events_state ON anomaly_events (state);

-- Alarm lifecycle history: every transition and comment, never updated in place.
CREATE TABLE IF NOT EXISTS alarm_history (
    id            bigserial PRIMARY KEY,
    event_id      bigint NOT NULL REFERENCES anomaly_events (event_id) ON DELETE CASCADE,
    from_state    text,
    to_state      text NOT NULL,
    actor         text NOT NULL,
    comment       text,
    shelved_until timestamptz,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alarm_history_event ON alarm_history (event_id, at);

INSERT INTO schema_migrations (version) VALUES ('001_schema') ON CONFLICT DO NOTHING;
