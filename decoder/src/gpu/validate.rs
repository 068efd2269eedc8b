//! Golden checks of the GPU path against `tests/fixtures/smollm2_golden.json` (HF
//! transformers, f32) and against the CPU f32 path: first-step logits within a relative
//! tolerance, identical greedy ids.

use serde_json::Value;

use super::{GpuError, GpuModel};
use crate::cpu::CpuModel;
use crate::sampling::argmax;
use crate::DecodeError;

/// One prompt of the golden fixture.
#[derive(Clone, Debug, PartialEq)]
pub struct GoldenCase {
    pub text: String,
    pub prompt_ids: Vec<u32>,
    /// The reference's top-10 token ids at the first step and their logits.
    pub top_ids: Vec<u32>,
    pub top_logits: Vec<f64>,
    /// The reference's greedy continuation (no stop tokens).
    pub greedy_ids: Vec<u32>,
}

fn ids(v: &Value, key: &str) -> Result<Vec<u32>, GpuError> {
    v[key]
        .as_array()
        .ok_or_else(|| GpuError::Config(format!("golden fixture: `{key}` is not an array")))?
        .iter()
        .map(|x| {
            x.as_u64().map(|x| x as u32).ok_or_else(|| GpuError::Config(format!("golden fixture: bad id in `{key}`")))
        })
        .collect()
}

/// The cases of a golden fixture (`{"cases": [{text, prompt_ids, top_ids, top_logits, greedy_ids}]}`).
pub fn parse_golden(v: &Value) -> Result<Vec<GoldenCase>, GpuError> {
    let cases = v["cases"].as_array().ok_or_else(|| GpuError::Config("golden fixture: no `cases` array".into()))?;
    cases
        .iter()
        .map(|c| {
            let top_logits = c["top_logits"]
                .as_array()
                .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<_>>>())
                .ok_or_else(|| GpuError::Config("golden fixture: bad `top_logits`".into()))?;
            let case = GoldenCase {
                text: c["text"].as_str().unwrap_or_default().to_string(),
                prompt_ids: ids(c, "prompt_ids")?,
                top_ids: ids(c, "top_ids")?,
                top_logits,
                greedy_ids: ids(c, "greedy_ids")?,
            };
            if case.top_ids.len() != case.top_logits.len() || case.top_ids.is_empty() || case.prompt_ids.is_empty() {
                return Err(GpuError::Config("golden fixture: empty prompt or top lists of different lengths".into()));
            }
            Ok(case)
        })
        .collect()
}

/// `max_i |got[id_i] − want_i| / |want_0|` over the reference's top ids (the largest logit
/// sets the scale).
pub fn top_logit_error(logits: &[f32], top_ids: &[u32], top_logits: &[f64]) -> f64 {
    let scale = top_logits.first().map_or(1.0, |x| x.abs()).max(f64::MIN_POSITIVE);
    top_ids
        .iter()
        .zip(top_logits)
        .map(|(&id, &want)| logits.get(id as usize).map_or(f64::INFINITY, |&g| (g as f64 - want).abs() / scale))
        .fold(0.0, f64::max)
}

/// The first index where two id lists differ (up to the shorter length), if any.
pub fn first_mismatch(a: &[u32], b: &[u32]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// What one golden prompt gave.
#[derive(Clone, Debug)]
pub struct GoldenReport {
    pub text: String,
    pub prompt_tokens: usize,
    /// GPU first-step logits vs the fixture's top-10 ([`top_logit_error`]).
    pub logit_rel_err: f64,
    /// The CPU path's error on the same measure (for scale).
    pub cpu_logit_rel_err: f64,
    pub gpu_ids: Vec<u32>,
    pub cpu_ids: Vec<u32>,
    /// The fixture's greedy ids (shorter than `gpu_ids`).
    pub fixture_ids: Vec<u32>,
}

impl GoldenReport {
    /// Logits within `tol`, GPU greedy ids equal to the CPU's and to the fixture's prefix.
    pub fn passed(&self, tol: f64) -> bool {
        self.logit_rel_err <= tol
            && self.gpu_ids == self.cpu_ids
            && first_mismatch(&self.gpu_ids, &self.fixture_ids).is_none()
    }
}

/// Runs one case on both paths: first-step logits, then `n` greedy tokens (no stop
/// tokens). Both models are reset first; their caches must hold the prompt + `n`.
pub fn check_case(
    gpu: &mut GpuModel,
    cpu: &mut CpuModel<'_>,
    case: &GoldenCase,
    n: usize,
) -> Result<GoldenReport, DecodeError> {
    gpu.reset();
    gpu.forward(&case.prompt_ids, case.prompt_ids.len())?;
    let logits = gpu.logits_host()?;
    let logit_rel_err = top_logit_error(&logits, &case.top_ids, &case.top_logits);
    let mut gpu_ids = vec![gpu.argmax()?[0]];
    while gpu_ids.len() < n {
        gpu.forward(&gpu_ids[gpu_ids.len() - 1..], 1)?;
        gpu_ids.push(gpu.argmax()?[0]);
    }

    cpu.reset();
    let mut l = cpu.forward(&case.prompt_ids, false)?;
    let cpu_logit_rel_err = top_logit_error(&l, &case.top_ids, &case.top_logits);
    let mut cpu_ids = Vec::with_capacity(n);
    while cpu_ids.len() < n {
        let next = argmax(&l);
        cpu_ids.push(next);
        if cpu_ids.len() < n {
            l = cpu.forward(&[next], false)?;
        }
    }
    Ok(GoldenReport {
        text: case.text.clone(),
        prompt_tokens: case.prompt_ids.len(),
        logit_rel_err,
        cpu_logit_rel_err,
        gpu_ids,
        cpu_ids,
        fixture_ids: case.greedy_ids.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fixture() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smollm2_golden.json");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        let cases = parse_golden(&v).unwrap();
        assert_eq!(cases.len(), 3);
        assert_eq!(cases[0].prompt_ids, vec![504, 3575, 282, 4649, 314]);
        assert_eq!(cases[0].top_ids[0], 7042);
        assert_eq!(cases[2].greedy_ids.len(), 12);
        assert!(parse_golden(&serde_json::json!({"cases": [{"prompt_ids": [1]}]})).is_err());
        assert!(parse_golden(&serde_json::json!({})).is_err());
    }

    #[test]
    fn errors_and_mismatches() {
        let logits = [0.0f32, 10.0, 5.0];
        assert_eq!(top_logit_error(&logits, &[1, 2], &[10.0, 5.0]), 0.0);
        assert!((top_logit_error(&logits, &[1, 2], &[10.0, 4.0]) - 0.1).abs() < 1e-12);
        assert_eq!(top_logit_error(&logits, &[7], &[1.0]), f64::INFINITY);
        assert_eq!(first_mismatch(&[1, 2, 3], &[1, 2]), None);
        assert_eq!(first_mismatch(&[1, 2, 3], &[1, 5, 3]), Some(1));
        let r = GoldenReport {
            text: String::new(),
            prompt_tokens: 1,
            logit_rel_err: 0.01,
            cpu_logit_rel_err: 0.0,
            gpu_ids: vec![1, 2, 3],
            cpu_ids: vec![1, 2, 3],
            fixture_ids: vec![1, 2],
        };
        assert!(r.passed(2e-2));
        assert!(!r.passed(1e-3));
        assert!(!GoldenReport { cpu_ids: vec![1, 2, 4], ..r.clone() }.passed(2e-2));
        assert!(!GoldenReport { fixture_ids: vec![9], ..r }.passed(2e-2));
    }
}
