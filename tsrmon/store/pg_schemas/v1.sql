-- tsrmon PostgreSQL store, schema version 1 (docs/scale-out.md).
-- One set of tables for every machine: machine and sensor are columns.
-- Statistics rows hold the same partial sums as the SQLite rows
-- (store/schema.py, store/deltas.py MERGE); an upsert ADDS a delta.
-- stat_minute and stat_hour are partitioned by RANGE (t0): their
-- partitions are created ahead by the store (postgres/partitions.py).

CREATE TABLE tsrmon_meta (
    key text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE sensor (
    machine text NOT NULL,
    name text NOT NULL,
    type text,
    mode text NOT NULL DEFAULT 'REAL',   -- ABS | REAL: the sum data is the mean of
    first_seen double precision,
    ord integer NOT NULL DEFAULT 0,
    ref double precision,                -- the fixed reference c of the moment sums
    PRIMARY KEY (machine, name)
);

CREATE TABLE stat_minute (
    machine text NOT NULL,
    sensor text NOT NULL,
    t0 bigint NOT NULL,                  -- bucket start, epoch seconds
    utc_offset integer NOT NULL,         -- seconds east of UTC at t0
    time text NOT NULL,                  -- local naive text, as the deployed server wrote it
    data double precision,
    count bigint NOT NULL,
    sum double precision NOT NULL,
    sum_abs double precision NOT NULL,
    min double precision NOT NULL,
    max double precision NOT NULL,
    sum_sq double precision NOT NULL,
    mcount bigint,
    s1 double precision,
    s2 double precision,
    s3 double precision,
    s4 double precision,
    PRIMARY KEY (machine, sensor, t0)
) PARTITION BY RANGE (t0);

CREATE TABLE stat_hour (LIKE stat_minute INCLUDING DEFAULTS, PRIMARY KEY (machine, sensor, t0))
    PARTITION BY RANGE (t0);
CREATE TABLE stat_day (LIKE stat_minute INCLUDING DEFAULTS, PRIMARY KEY (machine, sensor, t0));
CREATE TABLE stat_month (LIKE stat_minute INCLUDING DEFAULTS, PRIMARY KEY (machine, sensor, t0));
CREATE TABLE stat_year (LIKE stat_minute INCLUDING DEFAULTS, PRIMARY KEY (machine, sensor, t0));

-- Reads select by local date (the time text), as the deployed API does.
CREATE INDEX stat_hour_time ON stat_hour (machine, sensor, time);
CREATE INDEX stat_day_time ON stat_day (machine, sensor, time);
CREATE INDEX stat_month_time ON stat_month (machine, sensor, time);
CREATE INDEX stat_year_time ON stat_year (machine, sensor, time);

-- Rows the deployed server wrote (no t0, no sums), copied by migrate-store:
-- served by the same rules as in a SQLite file (docs/storage.md).
CREATE TABLE stat_legacy (
    machine text NOT NULL,
    sensor text NOT NULL,
    level text NOT NULL,
    id bigint NOT NULL,                  -- the row id in the source file (ordering, reruns)
    time text NOT NULL,
    data double precision,
    PRIMARY KEY (machine, sensor, level, id)
);
CREATE INDEX stat_legacy_time ON stat_legacy (machine, sensor, level, time);

CREATE TABLE fault_detect (
    id bigserial PRIMARY KEY,
    machine text NOT NULL,
    time text NOT NULL,
    t double precision,
    score double precision,
    threshold double precision,
    node text,
    source_id bigint                     -- migrate-store: the row id in the source file
);
CREATE INDEX fault_detect_machine_t ON fault_detect (machine, t);
CREATE INDEX fault_detect_machine_time ON fault_detect (machine, time);
CREATE UNIQUE INDEX fault_detect_source ON fault_detect (machine, source_id);

CREATE TABLE anomaly (LIKE fault_detect INCLUDING DEFAULTS);
ALTER TABLE anomaly ALTER COLUMN id SET DEFAULT nextval('fault_detect_id_seq');
ALTER TABLE anomaly ADD PRIMARY KEY (id);
CREATE INDEX anomaly_machine_time ON anomaly (machine, time);
CREATE INDEX anomaly_time ON anomaly (time);
CREATE UNIQUE INDEX anomaly_source ON anomaly (machine, source_id);

CREATE TABLE spectrum (
    machine text NOT NULL,
    sensor text NOT NULL,
    kind text NOT NULL,                  -- spectrum_minute | spectrum_hour | envelope_minute
    t0 bigint NOT NULL,
    utc_offset integer,
    time text,
    blocks integer,
    rate double precision,
    f0 double precision,
    df double precision,
    lines bytea,                         -- float32 little-endian RMS per line
    PRIMARY KEY (machine, sensor, kind, t0)
);

CREATE TABLE features (
    machine text NOT NULL,
    sensor text NOT NULL,
    t0 bigint NOT NULL,
    utc_offset integer,
    time text,
    blocks integer,
    velocity_rms double precision,
    json text,
    PRIMARY KEY (machine, sensor, t0)
);

-- Which node fed which machine on which local day (rows of the minute
-- level written): rebuild-stats from several nodes' raw CSV folders
-- refuses a day whose feeding node's folder is missing.
CREATE TABLE fed_day (
    machine text NOT NULL,
    day text NOT NULL,                   -- YYYY-MM-DD, local (TIME.ZONE)
    node text NOT NULL,                  -- CLUSTER.NODE (default: the host name)
    PRIMARY KEY (machine, day, node)
);

-- The side tables (alarms/store.py, notify/records.py), shared by every node.
CREATE TABLE alarms (
    id text PRIMARY KEY,
    rule text NOT NULL,
    kind text NOT NULL,
    machine text NOT NULL,
    sensor text NOT NULL,
    stype text,
    metric text,
    severity text NOT NULL,
    level double precision,
    clear_level double precision,
    message text,
    state text NOT NULL,
    raised_t double precision NOT NULL,
    value double precision,
    peak double precision,
    cleared_t double precision,
    clear_reason text,
    acked_t double precision,
    acked_by text
);
CREATE INDEX alarms_raised_t ON alarms (raised_t);
CREATE INDEX alarms_state ON alarms (state);

CREATE TABLE notification_attempts (
    id bigserial PRIMARY KEY,
    t double precision NOT NULL,
    event_id text NOT NULL,
    event_t double precision,
    machine text NOT NULL,
    kind text NOT NULL,
    channel text NOT NULL,
    target text NOT NULL,
    result text NOT NULL,
    attempts integer NOT NULL,
    suppressed integer NOT NULL,
    error text,
    title text,
    body text,
    source_id bigint
);
CREATE INDEX notification_attempts_t ON notification_attempts (t);
CREATE UNIQUE INDEX notification_attempts_source ON notification_attempts (source_id);
