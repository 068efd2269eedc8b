//! Keys, trials and the small records the API returns.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// What identifies a GPU for tuning purposes. The driver version is part of it: results
/// measured under another driver belong to another device row and never match.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceFingerprint {
    /// e.g. `NVIDIA H200`.
    pub gpu_name: String,
    /// e.g. `9.0`.
    pub compute_capability: String,
    /// The GPU UUID, or its PCI bus id where no UUID is available.
    pub uuid: String,
    /// e.g. `13.0`.
    pub driver_version: String,
}

impl DeviceFingerprint {
    /// The row id: 16 hex digits of SHA-256 over the four fields.
    pub fn id(&self) -> String {
        hash_parts(&[&self.gpu_name, &self.compute_capability, &self.uuid, &self.driver_version])
    }
}

/// The full tuning key. Lookups match every field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TuneKey {
    pub kernel: String,
    pub dtype: String,
    /// See [`crate::ShapeBucket`], e.g. `n=32768,b=8`.
    pub shape_bucket: String,
    pub device: DeviceFingerprint,
    /// e.g. `12.8`.
    pub nvrtc_version: String,
    pub tessera_version: String,
    /// Hash of the emitted source of the default config, or of the IR ([`source_hash`]).
    pub source_hash: String,
    /// Checksum of the candidate set ([`candidates_checksum`]).
    pub candidates_checksum: String,
}

impl TuneKey {
    pub(crate) fn validate(&self) -> Result<()> {
        let d = &self.device;
        for (name, v) in [
            ("kernel", &self.kernel),
            ("dtype", &self.dtype),
            ("shape_bucket", &self.shape_bucket),
            ("gpu_name", &d.gpu_name),
            ("compute_capability", &d.compute_capability),
            ("uuid", &d.uuid),
            ("driver_version", &d.driver_version),
            ("nvrtc_version", &self.nvrtc_version),
            ("tessera_version", &self.tessera_version),
            ("source_hash", &self.source_hash),
            ("candidates_checksum", &self.candidates_checksum),
        ] {
            if v.is_empty() {
                return Err(Error::Invalid(format!("tuning key field `{name}` is empty")));
            }
        }
        Ok(())
    }
}

impl fmt::Display for TuneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} [{}] on {} (sm {})",
            self.kernel, self.dtype, self.shape_bucket, self.device.gpu_name, self.device.compute_capability
        )
    }
}

/// Outcome of one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrialStatus {
    Ok,
    WrongResult,
    CompileError,
    LaunchFault,
    Timeout,
}

impl TrialStatus {
    pub const ALL: [TrialStatus; 5] =
        [Self::Ok, Self::WrongResult, Self::CompileError, Self::LaunchFault, Self::Timeout];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::WrongResult => "wrong-result",
            Self::CompileError => "compile-error",
            Self::LaunchFault => "launch-fault",
            Self::Timeout => "timeout",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| Error::Invalid(format!("unknown trial status `{s}`")))
    }
}

impl fmt::Display for TrialStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One candidate's result. Times are microseconds; `ok` trials must have a median.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub config: Value,
    pub status: TrialStatus,
    pub median_us: Option<f64>,
    pub p10_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub error: Option<String>,
}

impl Trial {
    pub fn ok(config: Value, median_us: f64, p10_us: f64, p90_us: f64) -> Self {
        Trial {
            config,
            status: TrialStatus::Ok,
            median_us: Some(median_us),
            p10_us: Some(p10_us),
            p90_us: Some(p90_us),
            error: None,
        }
    }

    pub fn failed(config: Value, status: TrialStatus, error: impl Into<String>) -> Self {
        Trial { config, status, median_us: None, p10_us: None, p90_us: None, error: Some(error.into()) }
    }

    /// The fastest `ok` trial, if any.
    pub fn fastest(trials: &[Trial]) -> Option<&Trial> {
        trials
            .iter()
            .filter(|t| t.status == TrialStatus::Ok)
            .min_by(|a, b| a.median_us.unwrap_or(f64::INFINITY).total_cmp(&b.median_us.unwrap_or(f64::INFINITY)))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for (name, v) in [("median_us", self.median_us), ("p10_us", self.p10_us), ("p90_us", self.p90_us)] {
            if v.is_some_and(|x| !x.is_finite()) {
                return Err(Error::Invalid(format!("{name} is not finite")));
            }
        }
        if self.status == TrialStatus::Ok && self.median_us.is_none() {
            return Err(Error::Invalid("an ok trial needs median_us".into()));
        }
        Ok(())
    }
}

/// A stored trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub id: String,
    pub run_id: String,
    pub trial: Trial,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// The winning configuration of a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Winner {
    pub config: Value,
    pub median_us: f64,
    pub p10_us: Option<f64>,
    pub p90_us: Option<f64>,
    /// The run that measured it (None once that run was pruned, or for a manual winner).
    pub run_id: Option<String>,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// One key of [`crate::TuningDb::list`].
#[derive(Debug, Clone, PartialEq)]
pub struct KeySummary {
    pub key: TuneKey,
    pub trials: i64,
    pub ok_trials: i64,
    pub winner: Option<Winner>,
}

/// One key of [`crate::TuningDb::show`], with its trials (fastest first, failures last).
#[derive(Debug, Clone, PartialEq)]
pub struct KernelDetail {
    pub summary: KeySummary,
    pub trials: Vec<TrialRecord>,
}

/// A tuning run (one `tessera autotune` invocation).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunId(pub String);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is current on this machine, for [`crate::TuningDb::prune`]. Rows that differ
/// in a field that is set are deleted; a `None` / empty field is not checked.
#[derive(Debug, Clone, Default)]
pub struct CurrentVersions {
    pub tessera_version: String,
    pub nvrtc_version: Option<String>,
    /// The driver of this machine. Only rows of this machine's GPUs ([`Self::device_uuids`])
    /// are checked against it: in a database shared by a fleet, other machines' rows
    /// (measured under their own drivers) stay.
    pub driver_version: Option<String>,
    /// UUIDs (or PCI bus ids) of this machine's GPUs.
    pub device_uuids: Vec<String>,
    /// kernel name → current source hash; kernels not listed are not checked.
    pub source_hashes: BTreeMap<String, String>,
}

/// Rows deleted by a prune.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub trials: u64,
    pub winners: u64,
    pub runs: u64,
    pub devices: u64,
}

/// Rows added (or, for winners, replaced by a newer one) by an import.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub devices: u64,
    pub runs: u64,
    pub trials: u64,
    pub winners: u64,
}

/// JSON with object keys sorted at every level, so equal configs have equal text.
pub fn canonical_json(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// 16 hex digits of SHA-256 over a kernel's source (or IR) text.
pub fn source_hash(text: &str) -> String {
    hash_parts(&[text])
}

/// 16 hex digits of SHA-256 over the candidate configs (order matters: it is the
/// enumeration order of the tune space).
pub fn candidates_checksum(configs: &[Value]) -> String {
    let texts: Vec<String> = configs.iter().map(canonical_json).collect();
    let parts: Vec<&str> = texts.iter().map(String::as_str).collect();
    hash_parts(&parts)
}

pub(crate) fn hash_parts(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..8])
}
