//! The export / import format: every table's rows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::key::{canonical_json, TrialStatus};

/// The `format` field of a JSON export.
pub const DUMP_FORMAT: &str = "tessera-tuning-db";

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Json,
    Csv,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRow {
    pub id: String,
    pub gpu_name: String,
    pub compute_capability: String,
    pub uuid: String,
    pub driver_version: String,
    pub first_seen: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    pub id: String,
    pub tessera_version: String,
    pub host: String,
    pub note: String,
    pub started_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRow {
    pub id: String,
    pub run_id: String,
    pub device_id: String,
    pub nvrtc_version: String,
    pub tessera_version: String,
    pub kernel: String,
    pub source_hash: String,
    pub candidates_checksum: String,
    pub dtype: String,
    pub shape_bucket: String,
    pub config: Value,
    pub status: TrialStatus,
    pub median_us: Option<f64>,
    pub p10_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub error: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WinnerRow {
    pub device_id: String,
    pub nvrtc_version: String,
    pub tessera_version: String,
    pub kernel: String,
    pub source_hash: String,
    pub candidates_checksum: String,
    pub dtype: String,
    pub shape_bucket: String,
    pub config: Value,
    pub median_us: f64,
    pub p10_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub run_id: Option<String>,
    pub updated_at: i64,
}

/// A whole database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dump {
    pub format: String,
    pub schema: i64,
    pub devices: Vec<DeviceRow>,
    pub runs: Vec<RunRow>,
    pub trials: Vec<TrialRow>,
    pub winners: Vec<WinnerRow>,
}

pub const CSV_HEADER: &str = "kernel,dtype,shape_bucket,gpu_name,compute_capability,uuid,driver_version,nvrtc_version,\
tessera_version,source_hash,candidates_checksum,run_id,config,status,median_us,p10_us,p90_us,error,created_at,winner";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt_f64(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

impl Dump {
    pub(crate) fn empty() -> Self {
        Dump { format: DUMP_FORMAT.into(), schema: 1, devices: vec![], runs: vec![], trials: vec![], winners: vec![] }
    }

    /// One line per trial (RFC 4180 quoting), `winner` = 1 for the key's winning config.
    pub fn to_csv(&self) -> String {
        let devices: BTreeMap<&str, &DeviceRow> = self.devices.iter().map(|d| (d.id.as_str(), d)).collect();
        let winners: BTreeMap<[&str; 8], String> = self
            .winners
            .iter()
            .map(|w| {
                let k = [
                    w.device_id.as_str(),
                    &w.nvrtc_version,
                    &w.tessera_version,
                    &w.kernel,
                    &w.source_hash,
                    &w.candidates_checksum,
                    &w.dtype,
                    &w.shape_bucket,
                ];
                (k, canonical_json(&w.config))
            })
            .collect();
        let mut out = String::from(CSV_HEADER);
        out.push('\n');
        for t in &self.trials {
            let d = devices.get(t.device_id.as_str());
            let config = canonical_json(&t.config);
            let k = [
                t.device_id.as_str(),
                &t.nvrtc_version,
                &t.tessera_version,
                &t.kernel,
                &t.source_hash,
                &t.candidates_checksum,
                &t.dtype,
                &t.shape_bucket,
            ];
            let is_winner = winners.get(&k).is_some_and(|w| *w == config) && t.status == TrialStatus::Ok;
            let fields = [
                t.kernel.clone(),
                t.dtype.clone(),
                t.shape_bucket.clone(),
                d.map(|d| d.gpu_name.clone()).unwrap_or_default(),
                d.map(|d| d.compute_capability.clone()).unwrap_or_default(),
                d.map(|d| d.uuid.clone()).unwrap_or_default(),
                d.map(|d| d.driver_version.clone()).unwrap_or_default(),
                t.nvrtc_version.clone(),
                t.tessera_version.clone(),
                t.source_hash.clone(),
                t.candidates_checksum.clone(),
                t.run_id.clone(),
                config,
                t.status.as_str().to_string(),
                opt_f64(t.median_us),
                opt_f64(t.p10_us),
                opt_f64(t.p90_us),
                t.error.clone().unwrap_or_default(),
                t.created_at.to_string(),
                (is_winner as u8).to_string(),
            ];
            out.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
        out
    }
}
