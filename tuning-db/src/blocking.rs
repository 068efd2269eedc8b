//! The blocking facade: [`AsyncTuningDb`] on an internal current-thread tokio runtime.

use crate::dump::{Dump, ExportFormat};
use crate::key::{CurrentVersions, ImportReport, KernelDetail, KeySummary, PruneReport, RunId, Trial, TuneKey, Winner};
use crate::store::AsyncTuningDb;
use crate::Result;

/// The tuning database for synchronous callers (the CLI, the autotuner's main thread).
/// Each handle owns a small current-thread runtime; do not call it from inside another
/// tokio runtime (use [`AsyncTuningDb`] there). Handles are independent: several may
/// point at the same database, in one process or many.
pub struct TuningDb {
    db: Option<AsyncTuningDb>,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for TuningDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TuningDb").field("location", &self.location()).finish()
    }
}

impl TuningDb {
    /// See [`AsyncTuningDb::open`]: `None` → `TESSERA_DB`, else the SQLite file in the
    /// cache dir; created and migrated on first use.
    pub fn open(url: Option<&str>) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let db = rt.block_on(AsyncTuningDb::open(url))?;
        Ok(TuningDb { db: Some(db), rt })
    }

    fn db(&self) -> &AsyncTuningDb {
        self.db.as_ref().expect("open until dropped")
    }

    pub fn location(&self) -> &str {
        self.db().location()
    }

    pub fn migrate(&self) -> Result<()> {
        self.rt.block_on(self.db().migrate())
    }

    pub fn start_run(&self, tessera_version: &str, note: &str) -> Result<RunId> {
        self.rt.block_on(self.db().start_run(tessera_version, note))
    }

    pub fn record_run(&self, run: &RunId, key: &TuneKey, trials: &[Trial], winner: Option<&Trial>) -> Result<()> {
        self.rt.block_on(self.db().record_run(run, key, trials, winner))
    }

    pub fn set_winner(&self, key: &TuneKey, winner: &Trial) -> Result<()> {
        self.rt.block_on(self.db().set_winner(key, winner))
    }

    pub fn winner(&self, key: &TuneKey) -> Result<Option<Winner>> {
        self.rt.block_on(self.db().winner(key))
    }

    pub fn has_fresh(&self, key: &TuneKey) -> Result<bool> {
        self.rt.block_on(self.db().has_fresh(key))
    }

    pub fn fresh_keys(&self, keys: &[TuneKey]) -> Result<Vec<TuneKey>> {
        self.rt.block_on(self.db().fresh_keys(keys))
    }

    pub fn list(&self) -> Result<Vec<KeySummary>> {
        self.rt.block_on(self.db().list())
    }

    pub fn show(&self, kernel: &str) -> Result<Vec<KernelDetail>> {
        self.rt.block_on(self.db().show(kernel))
    }

    pub fn dump(&self) -> Result<Dump> {
        self.rt.block_on(self.db().dump())
    }

    pub fn export(&self, format: ExportFormat) -> Result<String> {
        self.rt.block_on(self.db().export(format))
    }

    pub fn import(&self, json: &str) -> Result<ImportReport> {
        self.rt.block_on(self.db().import(json))
    }

    pub fn prune(&self, current: &CurrentVersions) -> Result<PruneReport> {
        self.rt.block_on(self.db().prune(current))
    }

    pub fn counts(&self) -> Result<(i64, i64, i64, i64)> {
        self.rt.block_on(self.db().counts())
    }
}

impl Drop for TuningDb {
    fn drop(&mut self) {
        // Close the pool on its own runtime: its connections hand themselves back there.
        if let Some(db) = self.db.take() {
            self.rt.block_on(async move { db.close().await });
        }
    }
}
