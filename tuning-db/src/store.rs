//! The async store: one enum over the two pools, shared SQL text.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Postgres, Row, SqlSafeStr, Sqlite, Transaction};

use crate::dump::{DeviceRow, Dump, ExportFormat, RunRow, TrialRow, WinnerRow, DUMP_FORMAT};
use crate::key::{canonical_json, DeviceFingerprint, TrialRecord, TrialStatus, TuneKey, Winner};
use crate::key::{hash_parts, CurrentVersions, ImportReport, KernelDetail, KeySummary, PruneReport, RunId, Trial};
use crate::{Error, Result, DB_ENV};

/// The migrations, embedded. `sqlx::migrate!` needs sqlx's `macros` feature, which we leave
/// off for build time (it compiles a second host copy of sqlx, tokio and SQLite), so the
/// files are included here and handed to sqlx's own [`Migrator`]: it keeps the
/// `_sqlx_migrations` table (checksums, so an edited migration is an error), applies each
/// migration in a transaction and, on PostgreSQL, under an advisory lock.
const MIGRATIONS: &[(i64, &str, &str)] = &[(1, "init", include_str!("../migrations/0001_init.sql"))];

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(v, d, sql)| Migration::new(v, Cow::Borrowed(d), MigrationType::Simple, sql.into_sql_str(), false))
            .collect(),
    )
}

/// Which database a handle talks to.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the concrete pool: the body is compiled once per backend
/// from the same text.
macro_rules! on_pool {
    ($self:expr, $p:ident => $body:expr) => {
        match &$self.backend {
            Backend::Sqlite($p) => $body,
            Backend::Postgres($p) => $body,
        }
    };
}

/// A write transaction: `BEGIN IMMEDIATE` on SQLite, so that the write lock is taken up
/// front and waits for the busy timeout instead of failing on a read→write upgrade.
trait BeginWrite {
    type Db: sqlx::Database;
    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Self::Db>>;
}

impl BeginWrite for SqlitePool {
    type Db = Sqlite;
    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Sqlite>> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Db = Postgres;
    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        self.begin().await
    }
}

macro_rules! key_where {
    ($prefix:literal) => {
        concat!(
            $prefix,
            "device_id = $1 AND ",
            $prefix,
            "nvrtc_version = $2 AND ",
            $prefix,
            "tessera_version = $3 AND ",
            $prefix,
            "kernel = $4 AND ",
            $prefix,
            "source_hash = $5 AND ",
            $prefix,
            "candidates_checksum = $6 AND ",
            $prefix,
            "dtype = $7 AND ",
            $prefix,
            "shape_bucket = $8"
        )
    };
}

/// Binds the eight key columns as `$1..$8`.
macro_rules! bind_key {
    ($q:expr, $dev:expr, $key:expr) => {
        $q.bind($dev.as_str())
            .bind($key.nvrtc_version.as_str())
            .bind($key.tessera_version.as_str())
            .bind($key.kernel.as_str())
            .bind($key.source_hash.as_str())
            .bind($key.candidates_checksum.as_str())
            .bind($key.dtype.as_str())
            .bind($key.shape_bucket.as_str())
    };
}

const UPSERT_DEVICE: &str = "INSERT INTO devices (id, gpu_name, compute_capability, uuid, driver_version, first_seen) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING";

const INSERT_RUN: &str = "INSERT INTO runs (id, tessera_version, host, note, started_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (id) DO NOTHING";

const INSERT_TRIAL: &str = "INSERT INTO trials (id, run_id, device_id, nvrtc_version, tessera_version, kernel, \
     source_hash, candidates_checksum, dtype, shape_bucket, config, status, median_us, p10_us, p90_us, error, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";

const IMPORT_TRIAL: &str = "INSERT INTO trials (id, run_id, device_id, nvrtc_version, tessera_version, kernel, \
     source_hash, candidates_checksum, dtype, shape_bucket, config, status, median_us, p10_us, p90_us, error, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) ON CONFLICT (id) DO NOTHING";

/// Replaces the key's winner; on import (`$14` = the imported time) only a newer one wins.
const UPSERT_WINNER: &str = "INSERT INTO winners (device_id, nvrtc_version, tessera_version, kernel, source_hash, \
     candidates_checksum, dtype, shape_bucket, config, median_us, p10_us, p90_us, run_id, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
     ON CONFLICT (device_id, nvrtc_version, tessera_version, kernel, source_hash, candidates_checksum, dtype, shape_bucket) \
     DO UPDATE SET config = excluded.config, median_us = excluded.median_us, p10_us = excluded.p10_us, \
     p90_us = excluded.p90_us, run_id = excluded.run_id, updated_at = excluded.updated_at \
     WHERE winners.updated_at < excluded.updated_at";

const SELECT_WINNER: &str =
    concat!("SELECT config, median_us, p10_us, p90_us, run_id, updated_at FROM winners WHERE ", key_where!(""));

const SELECT_FRESH: &str = concat!(
    "SELECT kernel FROM winners WHERE ",
    key_where!(""),
    " UNION ALL SELECT kernel FROM trials WHERE ",
    key_where!(""),
    " LIMIT 1"
);

const SELECT_FRESH_FOR: &str = "SELECT kernel, source_hash, candidates_checksum, dtype, shape_bucket FROM winners \
     WHERE device_id = $1 AND nvrtc_version = $2 AND tessera_version = $3 \
     UNION SELECT kernel, source_hash, candidates_checksum, dtype, shape_bucket FROM trials \
     WHERE device_id = $1 AND nvrtc_version = $2 AND tessera_version = $3";

/// `$1` = kernel name, or '' for all kernels.
const LIST_WINNERS: &str = "SELECT w.kernel, w.dtype, w.shape_bucket, d.gpu_name, d.compute_capability, d.uuid, \
     d.driver_version, w.nvrtc_version, w.tessera_version, w.source_hash, w.candidates_checksum, \
     w.config, w.median_us, w.p10_us, w.p90_us, w.run_id, w.updated_at \
     FROM winners w JOIN devices d ON d.id = w.device_id WHERE ($1 = '' OR w.kernel = $1)";

const LIST_COUNTS: &str = "SELECT t.kernel, t.dtype, t.shape_bucket, d.gpu_name, d.compute_capability, d.uuid, \
     d.driver_version, t.nvrtc_version, t.tessera_version, t.source_hash, t.candidates_checksum, \
     COUNT(*) AS n, COUNT(CASE WHEN t.status = 'ok' THEN 1 END) AS n_ok \
     FROM trials t JOIN devices d ON d.id = t.device_id WHERE ($1 = '' OR t.kernel = $1) \
     GROUP BY t.kernel, t.dtype, t.shape_bucket, d.gpu_name, d.compute_capability, d.uuid, d.driver_version, \
     t.nvrtc_version, t.tessera_version, t.source_hash, t.candidates_checksum";

const LIST_TRIALS: &str = "SELECT t.kernel, t.dtype, t.shape_bucket, d.gpu_name, d.compute_capability, d.uuid, \
     d.driver_version, t.nvrtc_version, t.tessera_version, t.source_hash, t.candidates_checksum, \
     t.id, t.run_id, t.config, t.status, t.median_us, t.p10_us, t.p90_us, t.error, t.created_at \
     FROM trials t JOIN devices d ON d.id = t.device_id WHERE t.kernel = $1 ORDER BY t.created_at, t.id";

const DUMP_DEVICES: &str =
    "SELECT id, gpu_name, compute_capability, uuid, driver_version, first_seen FROM devices ORDER BY id";
const DUMP_RUNS: &str = "SELECT id, tessera_version, host, note, started_at FROM runs ORDER BY started_at, id";
const DUMP_TRIALS: &str = "SELECT id, run_id, device_id, nvrtc_version, tessera_version, kernel, source_hash, \
     candidates_checksum, dtype, shape_bucket, config, status, median_us, p10_us, p90_us, error, created_at \
     FROM trials ORDER BY kernel, dtype, shape_bucket, created_at, id";
const DUMP_WINNERS: &str = "SELECT device_id, nvrtc_version, tessera_version, kernel, source_hash, \
     candidates_checksum, dtype, shape_bucket, config, median_us, p10_us, p90_us, run_id, updated_at \
     FROM winners ORDER BY kernel, dtype, shape_bucket, device_id";

/// Prune statements, run in one transaction, trials and winners alike.
const PRUNE_TESSERA: [&str; 2] =
    ["DELETE FROM trials WHERE tessera_version <> $1", "DELETE FROM winners WHERE tessera_version <> $1"];
const PRUNE_NVRTC: [&str; 2] =
    ["DELETE FROM trials WHERE nvrtc_version <> $1", "DELETE FROM winners WHERE nvrtc_version <> $1"];
const PRUNE_DRIVER: [&str; 2] = [
    "DELETE FROM trials WHERE device_id IN (SELECT id FROM devices WHERE driver_version <> $1 AND uuid = $2)",
    "DELETE FROM winners WHERE device_id IN (SELECT id FROM devices WHERE driver_version <> $1 AND uuid = $2)",
];
const PRUNE_SOURCE: [&str; 2] = [
    "DELETE FROM trials WHERE kernel = $1 AND source_hash <> $2",
    "DELETE FROM winners WHERE kernel = $1 AND source_hash <> $2",
];
const PRUNE_RUNS: &str = "DELETE FROM runs WHERE id NOT IN (SELECT run_id FROM trials) \
     AND id NOT IN (SELECT run_id FROM winners WHERE run_id IS NOT NULL)";
const PRUNE_DEVICES: &str = "DELETE FROM devices WHERE id NOT IN (SELECT device_id FROM trials) \
     AND id NOT IN (SELECT device_id FROM winners)";

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

/// The default SQLite file: `<cache dir>/tessera/tuning.sqlite`.
pub fn default_sqlite_path() -> Result<PathBuf> {
    Ok(dirs::cache_dir().ok_or(Error::NoCacheDir)?.join("tessera").join("tuning.sqlite"))
}

/// Decodes the 11 key columns at the start of a list row.
macro_rules! row_key {
    ($r:expr) => {
        TuneKey {
            kernel: $r.try_get(0)?,
            dtype: $r.try_get(1)?,
            shape_bucket: $r.try_get(2)?,
            device: DeviceFingerprint {
                gpu_name: $r.try_get(3)?,
                compute_capability: $r.try_get(4)?,
                uuid: $r.try_get(5)?,
                driver_version: $r.try_get(6)?,
            },
            nvrtc_version: $r.try_get(7)?,
            tessera_version: $r.try_get(8)?,
            source_hash: $r.try_get(9)?,
            candidates_checksum: $r.try_get(10)?,
        }
    };
}

/// The async tuning database. Cheap to clone (pools are reference counted).
#[derive(Debug, Clone)]
pub struct AsyncTuningDb {
    backend: Backend,
    location: String,
}

impl AsyncTuningDb {
    /// Opens (creating and migrating on first use) the database at `url`:
    /// `sqlite://PATH`, `sqlite::memory:`, a plain file path, or `postgres://...`.
    /// `None`: the `TESSERA_DB` environment variable, else [`default_sqlite_path`].
    pub async fn open(url: Option<&str>) -> Result<Self> {
        let url = match url {
            Some(u) => u.to_string(),
            None => match std::env::var(DB_ENV) {
                Ok(u) if !u.trim().is_empty() => u,
                _ => {
                    let path = default_sqlite_path()?;
                    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
                    format!("sqlite://{}", path.display())
                }
            },
        };
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(&url)?;
            let pool = PgPoolOptions::new().max_connections(4).connect_with(opts).await?;
            let location = match url.split_once('@') {
                Some((scheme_user, rest)) => {
                    format!("{}//{rest}", scheme_user.split("//").next().unwrap_or("postgres:"))
                }
                None => url.clone(),
            };
            AsyncTuningDb { backend: Backend::Postgres(pool), location }
        } else if url.starts_with("sqlite:") || !url.contains("://") {
            let opts = if url.starts_with("sqlite:") {
                SqliteConnectOptions::from_str(&url)?
            } else {
                SqliteConnectOptions::new().filename(&url)
            };
            let memory = url.contains(":memory:") || url.contains("mode=memory");
            let opts = opts
                .create_if_missing(true)
                .journal_mode(if memory { SqliteJournalMode::Memory } else { SqliteJournalMode::Wal })
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            if !memory {
                if let Some(dir) = opts.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
            }
            let location = format!("sqlite:{}", opts.get_filename().display());
            // An in-memory database lives in one connection.
            let max = if memory { 1 } else { 4 };
            let pool = SqlitePoolOptions::new().max_connections(max).connect_with(opts).await?;
            AsyncTuningDb { backend: Backend::Sqlite(pool), location }
        } else {
            return Err(Error::UnsupportedUrl(url));
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Applies the pending migrations (a no-op when there are none).
    pub async fn migrate(&self) -> Result<()> {
        let m = migrator();
        match &self.backend {
            Backend::Postgres(p) => m.run(p).await?,
            Backend::Sqlite(p) => {
                // sqlx takes no lock on SQLite: two processes creating the same new file at
                // once can race on `_sqlx_migrations`; the loser retries and finds it done.
                let mut attempt = 0;
                loop {
                    match m.run(p).await {
                        Ok(()) => break,
                        Err(_) if attempt < 3 => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(())
    }

    /// `sqlite:/path` or `postgres://host:port/db` (no credentials).
    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    /// Registers a tuning run and returns its id.
    pub async fn start_run(&self, tessera_version: &str, note: &str) -> Result<RunId> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let host = hostname();
        let id = hash_parts(&[
            &host,
            &std::process::id().to_string(),
            &nanos.to_string(),
            &COUNTER.fetch_add(1, Ordering::Relaxed).to_string(),
        ]);
        on_pool!(self, p => {
            sqlx::query(INSERT_RUN)
                .bind(id.as_str())
                .bind(tessera_version)
                .bind(host.as_str())
                .bind(note)
                .bind(now_ms())
                .execute(p)
                .await?;
        });
        Ok(RunId(id))
    }

    /// Records the trials of one key and (optionally) its winner, in one transaction: either
    /// all rows land or none do. The winner must be an `ok` trial; it replaces the key's
    /// previous winner.
    pub async fn record_run(&self, run: &RunId, key: &TuneKey, trials: &[Trial], winner: Option<&Trial>) -> Result<()> {
        key.validate()?;
        for t in trials {
            t.validate()?;
        }
        if let Some(w) = winner {
            w.validate()?;
            if w.status != TrialStatus::Ok {
                return Err(Error::Invalid(format!("the winner must be an ok trial, not {}", w.status)));
            }
        }
        let dev = key.device.id();
        let key_id = hash_parts(&[
            &dev,
            &key.nvrtc_version,
            &key.tessera_version,
            &key.kernel,
            &key.source_hash,
            &key.candidates_checksum,
            &key.dtype,
            &key.shape_bucket,
        ]);
        let now = now_ms();
        let rows: Vec<(String, String, &Trial)> = trials
            .iter()
            .map(|t| {
                let config = canonical_json(&t.config);
                (hash_parts(&[&run.0, &key_id, &config]), config, t)
            })
            .collect();
        let d = &key.device;
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(UPSERT_DEVICE)
                .bind(dev.as_str())
                .bind(d.gpu_name.as_str())
                .bind(d.compute_capability.as_str())
                .bind(d.uuid.as_str())
                .bind(d.driver_version.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            for (id, config, t) in &rows {
                sqlx::query(INSERT_TRIAL)
                    .bind(id.as_str())
                    .bind(run.0.as_str())
                    .bind(dev.as_str())
                    .bind(key.nvrtc_version.as_str())
                    .bind(key.tessera_version.as_str())
                    .bind(key.kernel.as_str())
                    .bind(key.source_hash.as_str())
                    .bind(key.candidates_checksum.as_str())
                    .bind(key.dtype.as_str())
                    .bind(key.shape_bucket.as_str())
                    .bind(config.as_str())
                    .bind(t.status.as_str())
                    .bind(t.median_us)
                    .bind(t.p10_us)
                    .bind(t.p90_us)
                    .bind(t.error.as_deref())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(w) = winner {
                let config = canonical_json(&w.config);
                bind_key!(sqlx::query(UPSERT_WINNER), dev, key)
                    .bind(config.as_str())
                    .bind(w.median_us)
                    .bind(w.p10_us)
                    .bind(w.p90_us)
                    .bind(Some(run.0.as_str()))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Sets (or replaces) a key's winner without trials, e.g. a hand-picked config.
    pub async fn set_winner(&self, key: &TuneKey, winner: &Trial) -> Result<()> {
        key.validate()?;
        winner.validate()?;
        if winner.status != TrialStatus::Ok {
            return Err(Error::Invalid(format!("the winner must be an ok trial, not {}", winner.status)));
        }
        let dev = key.device.id();
        let d = &key.device;
        let config = canonical_json(&winner.config);
        let now = now_ms();
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(UPSERT_DEVICE)
                .bind(dev.as_str())
                .bind(d.gpu_name.as_str())
                .bind(d.compute_capability.as_str())
                .bind(d.uuid.as_str())
                .bind(d.driver_version.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            bind_key!(sqlx::query(UPSERT_WINNER), dev, key)
                .bind(config.as_str())
                .bind(winner.median_us)
                .bind(winner.p10_us)
                .bind(winner.p90_us)
                .bind(None::<&str>)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The winner of exactly this key (every column matches), if any.
    pub async fn winner(&self, key: &TuneKey) -> Result<Option<Winner>> {
        let dev = key.device.id();
        on_pool!(self, p => {
            let row = bind_key!(sqlx::query(SELECT_WINNER), dev, key).fetch_optional(p).await?;
            match row {
                None => Ok(None),
                Some(r) => Ok(Some(Winner {
                    config: serde_json::from_str(r.try_get::<&str, _>(0)?)?,
                    median_us: r.try_get(1)?,
                    p10_us: r.try_get(2)?,
                    p90_us: r.try_get(3)?,
                    run_id: r.try_get(4)?,
                    updated_at: r.try_get(5)?,
                })),
            }
        })
    }

    /// Whether this exact key was already tuned (it has a winner, or trials, which
    /// [`record_run`](Self::record_run) writes atomically, e.g. all candidates failed).
    pub async fn has_fresh(&self, key: &TuneKey) -> Result<bool> {
        let dev = key.device.id();
        on_pool!(self, p => {
            Ok(bind_key!(sqlx::query(SELECT_FRESH), dev, key).fetch_optional(p).await?.is_some())
        })
    }

    /// The subset of `keys` that is already tuned (see [`has_fresh`](Self::has_fresh)),
    /// in input order; one query per distinct (device, NVRTC, Tessera).
    pub async fn fresh_keys(&self, keys: &[TuneKey]) -> Result<Vec<TuneKey>> {
        type Rest = (String, String, String, String, String);
        let mut groups: BTreeMap<(String, &str, &str), Vec<&TuneKey>> = BTreeMap::new();
        for k in keys {
            groups.entry((k.device.id(), &k.nvrtc_version, &k.tessera_version)).or_default().push(k);
        }
        let mut fresh: BTreeSet<&TuneKey> = BTreeSet::new();
        for ((dev, nvrtc, tessera), ks) in groups {
            let found: BTreeSet<Rest> = on_pool!(self, p => {
                sqlx::query_as::<_, Rest>(SELECT_FRESH_FOR)
                    .bind(dev.as_str())
                    .bind(nvrtc)
                    .bind(tessera)
                    .fetch_all(p)
                    .await?
                    .into_iter()
                    .collect()
            });
            for k in ks {
                let t = (
                    k.kernel.clone(),
                    k.source_hash.clone(),
                    k.candidates_checksum.clone(),
                    k.dtype.clone(),
                    k.shape_bucket.clone(),
                );
                if found.contains(&t) {
                    fresh.insert(k);
                }
            }
        }
        Ok(keys.iter().filter(|k| fresh.contains(k)).cloned().collect())
    }

    /// Every key with trials or a winner, sorted by kernel, dtype, shape bucket, device.
    pub async fn list(&self) -> Result<Vec<KeySummary>> {
        self.summaries("").await
    }

    async fn summaries(&self, kernel: &str) -> Result<Vec<KeySummary>> {
        let mut out: BTreeMap<TuneKey, KeySummary> = BTreeMap::new();
        on_pool!(self, p => {
            for r in sqlx::query(LIST_COUNTS).bind(kernel).fetch_all(p).await? {
                let key = row_key!(r);
                let s = KeySummary { key: key.clone(), trials: r.try_get(11)?, ok_trials: r.try_get(12)?, winner: None };
                out.insert(key, s);
            }
            for r in sqlx::query(LIST_WINNERS).bind(kernel).fetch_all(p).await? {
                let key = row_key!(r);
                let w = Winner {
                    config: serde_json::from_str(r.try_get::<&str, _>(11)?)?,
                    median_us: r.try_get(12)?,
                    p10_us: r.try_get(13)?,
                    p90_us: r.try_get(14)?,
                    run_id: r.try_get(15)?,
                    updated_at: r.try_get(16)?,
                };
                out.entry(key.clone())
                    .or_insert(KeySummary { key, trials: 0, ok_trials: 0, winner: None })
                    .winner = Some(w);
            }
        });
        Ok(out.into_values().collect())
    }

    /// One kernel's keys with all their trials (fastest ok first, then failures).
    pub async fn show(&self, kernel: &str) -> Result<Vec<KernelDetail>> {
        if kernel.is_empty() {
            return Err(Error::Invalid("empty kernel name".into()));
        }
        let mut trials: BTreeMap<TuneKey, Vec<TrialRecord>> = BTreeMap::new();
        on_pool!(self, p => {
            for r in sqlx::query(LIST_TRIALS).bind(kernel).fetch_all(p).await? {
                let key = row_key!(r);
                let rec = TrialRecord {
                    id: r.try_get(11)?,
                    run_id: r.try_get(12)?,
                    trial: Trial {
                        config: serde_json::from_str(r.try_get::<&str, _>(13)?)?,
                        status: TrialStatus::parse(r.try_get::<&str, _>(14)?)?,
                        median_us: r.try_get(15)?,
                        p10_us: r.try_get(16)?,
                        p90_us: r.try_get(17)?,
                        error: r.try_get(18)?,
                    },
                    created_at: r.try_get(19)?,
                };
                trials.entry(key).or_default().push(rec);
            }
        });
        let mut out = Vec::new();
        for summary in self.summaries(kernel).await? {
            let mut ts = trials.remove(&summary.key).unwrap_or_default();
            ts.sort_by(|a, b| {
                let rank =
                    |t: &TrialRecord| (t.trial.status != TrialStatus::Ok, t.trial.median_us.unwrap_or(f64::INFINITY));
                let (ra, rb) = (rank(a), rank(b));
                ra.0.cmp(&rb.0).then(ra.1.total_cmp(&rb.1)).then(a.trial.status.cmp(&b.trial.status))
            });
            out.push(KernelDetail { summary, trials: ts });
        }
        Ok(out)
    }

    /// Everything, as the rows of each table.
    pub async fn dump(&self) -> Result<Dump> {
        let mut dump = Dump::empty();
        on_pool!(self, p => {
            for r in sqlx::query(DUMP_DEVICES).fetch_all(p).await? {
                dump.devices.push(DeviceRow {
                    id: r.try_get(0)?,
                    gpu_name: r.try_get(1)?,
                    compute_capability: r.try_get(2)?,
                    uuid: r.try_get(3)?,
                    driver_version: r.try_get(4)?,
                    first_seen: r.try_get(5)?,
                });
            }
            for r in sqlx::query(DUMP_RUNS).fetch_all(p).await? {
                dump.runs.push(RunRow {
                    id: r.try_get(0)?,
                    tessera_version: r.try_get(1)?,
                    host: r.try_get(2)?,
                    note: r.try_get(3)?,
                    started_at: r.try_get(4)?,
                });
            }
            for r in sqlx::query(DUMP_TRIALS).fetch_all(p).await? {
                dump.trials.push(TrialRow {
                    id: r.try_get(0)?,
                    run_id: r.try_get(1)?,
                    device_id: r.try_get(2)?,
                    nvrtc_version: r.try_get(3)?,
                    tessera_version: r.try_get(4)?,
                    kernel: r.try_get(5)?,
                    source_hash: r.try_get(6)?,
                    candidates_checksum: r.try_get(7)?,
                    dtype: r.try_get(8)?,
                    shape_bucket: r.try_get(9)?,
                    config: serde_json::from_str(r.try_get::<&str, _>(10)?)?,
                    status: TrialStatus::parse(r.try_get::<&str, _>(11)?)?,
                    median_us: r.try_get(12)?,
                    p10_us: r.try_get(13)?,
                    p90_us: r.try_get(14)?,
                    error: r.try_get(15)?,
                    created_at: r.try_get(16)?,
                });
            }
            for r in sqlx::query(DUMP_WINNERS).fetch_all(p).await? {
                dump.winners.push(WinnerRow {
                    device_id: r.try_get(0)?,
                    nvrtc_version: r.try_get(1)?,
                    tessera_version: r.try_get(2)?,
                    kernel: r.try_get(3)?,
                    source_hash: r.try_get(4)?,
                    candidates_checksum: r.try_get(5)?,
                    dtype: r.try_get(6)?,
                    shape_bucket: r.try_get(7)?,
                    config: serde_json::from_str(r.try_get::<&str, _>(8)?)?,
                    median_us: r.try_get(9)?,
                    p10_us: r.try_get(10)?,
                    p90_us: r.try_get(11)?,
                    run_id: r.try_get(12)?,
                    updated_at: r.try_get(13)?,
                });
            }
        });
        Ok(dump)
    }

    /// The whole database as JSON (the import format) or CSV (one row per trial, for
    /// spreadsheets; winners set without trials appear only in JSON).
    pub async fn export(&self, format: ExportFormat) -> Result<String> {
        let dump = self.dump().await?;
        match format {
            ExportFormat::Json => Ok(serde_json::to_string_pretty(&dump)? + "\n"),
            ExportFormat::Csv => Ok(dump.to_csv()),
        }
    }

    /// Imports a JSON export in one transaction. Idempotent: rows already present are
    /// kept; a winner is replaced only by a newer one.
    pub async fn import(&self, json: &str) -> Result<ImportReport> {
        let dump: Dump = serde_json::from_str(json)?;
        if dump.format != DUMP_FORMAT {
            return Err(Error::Invalid(format!("not a tuning-db export (format `{}`)", dump.format)));
        }
        if dump.schema != 1 {
            return Err(Error::Invalid(format!("export schema {} is not supported (this build reads 1)", dump.schema)));
        }
        let mut rep = ImportReport::default();
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            for d in &dump.devices {
                let fingerprint = DeviceFingerprint {
                    gpu_name: d.gpu_name.clone(),
                    compute_capability: d.compute_capability.clone(),
                    uuid: d.uuid.clone(),
                    driver_version: d.driver_version.clone(),
                };
                if d.id != fingerprint.id() {
                    return Err(Error::Invalid(format!("device {} does not match its fingerprint", d.id)));
                }
                rep.devices += sqlx::query(UPSERT_DEVICE)
                    .bind(d.id.as_str())
                    .bind(d.gpu_name.as_str())
                    .bind(d.compute_capability.as_str())
                    .bind(d.uuid.as_str())
                    .bind(d.driver_version.as_str())
                    .bind(d.first_seen)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            for r in &dump.runs {
                rep.runs += sqlx::query(INSERT_RUN)
                    .bind(r.id.as_str())
                    .bind(r.tessera_version.as_str())
                    .bind(r.host.as_str())
                    .bind(r.note.as_str())
                    .bind(r.started_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            for t in &dump.trials {
                rep.trials += sqlx::query(IMPORT_TRIAL)
                    .bind(t.id.as_str())
                    .bind(t.run_id.as_str())
                    .bind(t.device_id.as_str())
                    .bind(t.nvrtc_version.as_str())
                    .bind(t.tessera_version.as_str())
                    .bind(t.kernel.as_str())
                    .bind(t.source_hash.as_str())
                    .bind(t.candidates_checksum.as_str())
                    .bind(t.dtype.as_str())
                    .bind(t.shape_bucket.as_str())
                    .bind(canonical_json(&t.config))
                    .bind(t.status.as_str())
                    .bind(t.median_us)
                    .bind(t.p10_us)
                    .bind(t.p90_us)
                    .bind(t.error.as_deref())
                    .bind(t.created_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            for w in &dump.winners {
                rep.winners += sqlx::query(UPSERT_WINNER)
                    .bind(w.device_id.as_str())
                    .bind(w.nvrtc_version.as_str())
                    .bind(w.tessera_version.as_str())
                    .bind(w.kernel.as_str())
                    .bind(w.source_hash.as_str())
                    .bind(w.candidates_checksum.as_str())
                    .bind(w.dtype.as_str())
                    .bind(w.shape_bucket.as_str())
                    .bind(canonical_json(&w.config))
                    .bind(w.median_us)
                    .bind(w.p10_us)
                    .bind(w.p90_us)
                    .bind(w.run_id.as_deref())
                    .bind(w.updated_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
        });
        Ok(rep)
    }

    /// Deletes, in one transaction, the trials and winners that differ from `current` in
    /// Tessera version, NVRTC version (if given), driver version (if given; this applies
    /// to every device in the database) or source hash (for the kernels listed), then
    /// the runs and devices nothing refers to any more.
    pub async fn prune(&self, current: &CurrentVersions) -> Result<PruneReport> {
        let mut rep = PruneReport::default();
        let mut singles: Vec<([&'static str; 2], &str)> = Vec::new();
        if !current.tessera_version.is_empty() {
            singles.push((PRUNE_TESSERA, &current.tessera_version));
        }
        if let Some(v) = current.nvrtc_version.as_deref().filter(|v| !v.is_empty()) {
            singles.push((PRUNE_NVRTC, v));
        }
        let driver = current.driver_version.as_deref().filter(|v| !v.is_empty());
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            for ([trials, winners], v) in &singles {
                rep.trials += sqlx::query(*trials).bind(*v).execute(&mut *tx).await?.rows_affected();
                rep.winners += sqlx::query(*winners).bind(*v).execute(&mut *tx).await?.rows_affected();
            }
            // Another driver makes only this machine's own rows stale.
            for uuid in current.device_uuids.iter().filter(|_| driver.is_some()) {
                let [trials, winners] = PRUNE_DRIVER;
                let d = driver.unwrap_or_default();
                rep.trials += sqlx::query(trials).bind(d).bind(uuid.as_str()).execute(&mut *tx).await?.rows_affected();
                rep.winners += sqlx::query(winners).bind(d).bind(uuid.as_str()).execute(&mut *tx).await?.rows_affected();
            }
            for (kernel, hash) in &current.source_hashes {
                let [trials, winners] = PRUNE_SOURCE;
                rep.trials += sqlx::query(trials).bind(kernel.as_str()).bind(hash.as_str()).execute(&mut *tx).await?.rows_affected();
                rep.winners += sqlx::query(winners).bind(kernel.as_str()).bind(hash.as_str()).execute(&mut *tx).await?.rows_affected();
            }
            rep.runs = sqlx::query(PRUNE_RUNS).execute(&mut *tx).await?.rows_affected();
            rep.devices = sqlx::query(PRUNE_DEVICES).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
        });
        Ok(rep)
    }

    /// Row counts of (devices, runs, trials, winners).
    pub async fn counts(&self) -> Result<(i64, i64, i64, i64)> {
        on_pool!(self, p => {
            let mut c = [0i64; 4];
            for (i, sql) in [
                "SELECT COUNT(*) FROM devices",
                "SELECT COUNT(*) FROM runs",
                "SELECT COUNT(*) FROM trials",
                "SELECT COUNT(*) FROM winners",
            ]
            .into_iter()
            .enumerate()
            {
                c[i] = sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await?;
            }
            Ok((c[0], c[1], c[2], c[3]))
        })
    }
}
