//! Tessera's tuning database: every autotuning trial and the winning configuration per
//! tuning key, in SQLite (default, a file in the user's cache dir) or PostgreSQL (a fleet).
//!
//! One code path serves both backends: the SQL text is shared (`$1` placeholders, only
//! TEXT / BIGINT / DOUBLE PRECISION columns, ids computed here), and a small enum over
//! [`sqlx::SqlitePool`] / [`sqlx::PgPool`] runs it. Nothing here knows about CUDA: the
//! caller fills in the [`DeviceFingerprint`] and the versions.
//!
//! * [`AsyncTuningDb`]: the async API (for callers that already run tokio).
//! * [`TuningDb`]: the same API, blocking, on an internal current-thread runtime.
//! * [`ShapeBucket`] / [`BucketSpec`]: how kernels turn shapes into bucket strings.
//!
//! A key is fresh while its every column matches: [`TuningDb::winner`] compares all of
//! them, so a record made with another kernel source, driver, NVRTC or Tessera version is
//! never returned, and [`TuningDb::prune`] deletes such records.

mod blocking;
mod bucket;
mod dump;
mod key;
mod store;

pub use blocking::TuningDb;
pub use bucket::{bucket_multiple, bucket_pow2, bucket_pow2_floor, BucketSpec, Bucketing, ShapeBucket};
pub use dump::{DeviceRow, Dump, ExportFormat, RunRow, TrialRow, WinnerRow, DUMP_FORMAT};
pub use key::{
    candidates_checksum, canonical_json, source_hash, CurrentVersions, DeviceFingerprint, ImportReport, KernelDetail,
    KeySummary, PruneReport, RunId, Trial, TrialRecord, TrialStatus, TuneKey, Winner,
};
pub use store::{default_sqlite_path, AsyncTuningDb, Backend};

/// Errors of the tuning database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("unsupported database URL `{0}` (expected sqlite://PATH, a file path, or postgres://...)")]
    UnsupportedUrl(String),
    #[error("no cache directory on this system; pass --db or set TESSERA_DB")]
    NoCacheDir,
    #[error("invalid input: {0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The environment variable naming the database when no URL is given.
pub const DB_ENV: &str = "TESSERA_DB";
