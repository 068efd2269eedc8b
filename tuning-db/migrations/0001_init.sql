-- Tessera tuning database, schema 1.
--
-- The same text runs on SQLite and PostgreSQL: only TEXT, BIGINT and DOUBLE PRECISION
-- columns, ids computed by the client (hex SHA-256 prefixes), times in Unix milliseconds.
-- A tuning key is (device_id, nvrtc_version, tessera_version, kernel, source_hash,
-- candidates_checksum, dtype, shape_bucket); lookups match every column, so a record made
-- for another driver (part of the device fingerprint), NVRTC, Tessera or kernel source
-- never matches.

CREATE TABLE devices (
    id                 TEXT PRIMARY KEY,
    gpu_name           TEXT NOT NULL,
    compute_capability TEXT NOT NULL,
    uuid               TEXT NOT NULL,
    driver_version     TEXT NOT NULL,
    first_seen         BIGINT NOT NULL
);

CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    tessera_version TEXT NOT NULL,
    host            TEXT NOT NULL,
    note            TEXT NOT NULL,
    started_at      BIGINT NOT NULL
);

CREATE TABLE trials (
    id                  TEXT PRIMARY KEY,
    run_id              TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    device_id           TEXT NOT NULL REFERENCES devices (id),
    nvrtc_version       TEXT NOT NULL,
    tessera_version     TEXT NOT NULL,
    kernel              TEXT NOT NULL,
    source_hash         TEXT NOT NULL,
    candidates_checksum TEXT NOT NULL,
    dtype               TEXT NOT NULL,
    shape_bucket        TEXT NOT NULL,
    config              TEXT NOT NULL,
    status              TEXT NOT NULL
        CHECK (status IN ('ok', 'wrong-result', 'compile-error', 'launch-fault', 'timeout')),
    median_us           DOUBLE PRECISION,
    p10_us              DOUBLE PRECISION,
    p90_us              DOUBLE PRECISION,
    error               TEXT,
    created_at          BIGINT NOT NULL,
    CHECK (status <> 'ok' OR median_us IS NOT NULL)
);

CREATE INDEX trials_by_key ON trials
    (kernel, device_id, nvrtc_version, tessera_version, source_hash, candidates_checksum, dtype, shape_bucket);
CREATE INDEX trials_by_run ON trials (run_id);

CREATE TABLE winners (
    device_id           TEXT NOT NULL REFERENCES devices (id),
    nvrtc_version       TEXT NOT NULL,
    tessera_version     TEXT NOT NULL,
    kernel              TEXT NOT NULL,
    source_hash         TEXT NOT NULL,
    candidates_checksum TEXT NOT NULL,
    dtype               TEXT NOT NULL,
    shape_bucket        TEXT NOT NULL,
    config              TEXT NOT NULL,
    median_us           DOUBLE PRECISION NOT NULL,
    p10_us              DOUBLE PRECISION,
    p90_us              DOUBLE PRECISION,
    run_id              TEXT REFERENCES runs (id) ON DELETE SET NULL,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (device_id, nvrtc_version, tessera_version, kernel, source_hash, candidates_checksum, dtype, shape_bucket)
);
