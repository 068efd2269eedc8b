//! Kernel timing with CUDA events, one event pair per iteration.

use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaStream};

use crate::error::{Result, RuntimeError};

/// Summary of per-iteration times, in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct TimingStats {
    /// Median (linear interpolation between the middle samples).
    pub median_us: f64,
    /// Fastest iteration.
    pub min_us: f64,
    /// Slowest iteration.
    pub max_us: f64,
    /// 10th percentile.
    pub p10_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Every measured iteration, in launch order.
    pub samples: Vec<f64>,
}

/// The `q`-quantile (0..=1) of sorted values, interpolating linearly between ranks.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl TimingStats {
    /// Statistics of samples in microseconds; `None` when there are none.
    pub fn from_samples(samples: Vec<f64>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.clone();
        s.sort_by(f64::total_cmp);
        Some(TimingStats {
            median_us: quantile(&s, 0.5),
            min_us: s[0],
            max_us: s[s.len() - 1],
            p10_us: quantile(&s, 0.1),
            p90_us: quantile(&s, 0.9),
            mean_us: s.iter().sum::<f64>() / s.len() as f64,
            samples,
        })
    }
}

impl std::fmt::Display for TimingStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:.2} µs (p10 {:.2}, p90 {:.2}, min {:.2}, max {:.2}; {} samples)",
            self.median_us,
            self.p10_us,
            self.p90_us,
            self.min_us,
            self.max_us,
            self.samples.len()
        )
    }
}

/// Runs `launch(i)` for `warmup` untimed then `iters` timed iterations on `stream`, each
/// timed iteration between its own pair of events. `i` counts on through warmup and
/// measurement (`0..warmup + iters`), so a caller can rotate through several input sets
/// (`i % sets`) to keep L2 cold. `launch` must enqueue its work on `stream`.
pub fn time<F>(stream: &Arc<CudaStream>, warmup: usize, iters: usize, mut launch: F) -> Result<TimingStats>
where
    F: FnMut(usize) -> Result<()>,
{
    if iters == 0 {
        return Err(RuntimeError::Driver("timing needs at least one iteration".into()));
    }
    for i in 0..warmup {
        launch(i)?;
    }
    let ctx = stream.context();
    let new_event = || ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT));
    let events: Vec<(CudaEvent, CudaEvent)> =
        (0..iters).map(|_| Ok((new_event()?, new_event()?))).collect::<Result<_>>()?;
    stream.synchronize()?;
    for (k, (start, end)) in events.iter().enumerate() {
        start.record(stream)?;
        launch(warmup + k)?;
        end.record(stream)?;
    }
    stream.synchronize()?;
    let samples = events.iter().map(|(s, e)| Ok(s.elapsed_ms(e)? as f64 * 1e3)).collect::<Result<Vec<f64>>>()?;
    Ok(TimingStats::from_samples(samples).expect("iters > 0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_samples() {
        let s = TimingStats::from_samples(vec![5.0, 1.0, 4.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.min_us, s.median_us, s.max_us, s.mean_us), (1.0, 3.0, 5.0, 3.0));
        assert!((s.p10_us - 1.4).abs() < 1e-12 && (s.p90_us - 4.6).abs() < 1e-12);
        assert_eq!(s.samples, vec![5.0, 1.0, 4.0, 2.0, 3.0], "launch order is kept");
        let even = TimingStats::from_samples(vec![1.0, 2.0, 3.0, 10.0]).unwrap();
        assert_eq!(even.median_us, 2.5);
        let one = TimingStats::from_samples(vec![7.0]).unwrap();
        assert_eq!((one.p10_us, one.median_us, one.p90_us), (7.0, 7.0, 7.0));
        assert!(TimingStats::from_samples(vec![]).is_none());
    }
}
