//! The decoder's attention configurations through a real tuning database on the GPU
//! (keys carry the device's fingerprint, so this needs one): without records the
//! decoder's heuristics; winners recorded for the `dense` and `tree_verify` keys of the
//! decoder's shapes reach its ops, at any shape of the same buckets; a model built with
//! them computes the logits the heuristic one computes.
//!
//! Runs only with `TESSERA_GPU_TESTS=1` on a machine with a GPU; elsewhere it prints a
//! skip line.

use tessera::autotune::{target_key, DenseTarget, SplitConfig, TreeConfig, TreeVerifyTarget, TuneTarget};
use tessera::dispatch::{decoder_choices, decoder_shapes};
use tessera_decoder::gpu::{GpuModel, GpuWeights, KernelChoices};
use tessera_decoder::LlamaConfig;
use tessera_runtime::Runtime;
use tessera_tuning_db::{Trial, TuningDb};

fn runtime() -> Option<Runtime> {
    if std::env::var("TESSERA_GPU_TESTS").as_deref() != Ok("1") {
        eprintln!("SKIPPED: set TESSERA_GPU_TESTS=1 on a GPU machine to run the GPU dispatch checks");
        return None;
    }
    Some(Runtime::new(0).expect("TESSERA_GPU_TESTS=1 but no usable GPU"))
}

#[test]
fn decoder_choices_come_from_the_database() {
    let Some(rt) = runtime() else { return };
    let dir = std::env::temp_dir().join(format!("tessera-gpu-dispatch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("tuning.db").display());
    // Llama-3-8B heads (the presets'), one layer: small enough for any test GPU.
    let c = LlamaConfig { n_layers: 1, ..LlamaConfig::llama3_8b_shapes() };
    let sm = rt.info().sm_count as usize;

    let untuned = decoder_choices(&rt, Some(&url), &c, 1, 4096, 40);
    assert!(!untuned.dense.tuned && !untuned.prefill.tuned);
    let h = KernelChoices::heuristic(&c, 1, sm);
    assert_eq!(untuned.choices.dense, h.dense);
    assert_eq!(format!("{:?}", untuned.choices.prefill), format!("{:?}", h.prefill));

    // Winners for the keys of (B1, context 4096, a 40-token prompt).
    let (ds, ts) = decoder_shapes(&c, 1, 4096, 40);
    let dense = SplitConfig { block_n: 32, warps: 8, max_splits: 8, stages: 3 };
    let prefill = TreeConfig { block_n: 32, warps: 8, max_splits: 8, rows: 32 };
    assert!(DenseTarget.candidates(&ds).contains(&dense));
    assert!(TreeVerifyTarget.candidates(&ts).contains(&prefill), "{:?}", TreeVerifyTarget.candidates(&ts));
    let db = TuningDb::open(Some(&url)).unwrap();
    let run = db.start_run(env!("CARGO_PKG_VERSION"), "gpu_dispatch test").unwrap();
    let t = Trial::ok(serde_json::to_value(dense).unwrap(), 10.0, 9.0, 11.0);
    db.record_run(&run, &target_key(&rt, &DenseTarget, &ds).unwrap(), std::slice::from_ref(&t), Some(&t)).unwrap();
    let t = Trial::ok(serde_json::to_value(prefill).unwrap(), 20.0, 19.0, 21.0);
    db.record_run(&run, &target_key(&rt, &TreeVerifyTarget, &ts).unwrap(), std::slice::from_ref(&t), Some(&t)).unwrap();
    drop(db);

    // Another context and prompt of the same buckets (N ≤ 4096, prefix ≤ 64) find them.
    let tuned = decoder_choices(&rt, Some(&url), &c, 1, 3000, 33);
    assert!(tuned.dense.tuned && tuned.prefill.tuned, "{:?}", tuned.json());
    let k = &tuned.choices;
    assert_eq!((k.dense.block_n, k.dense.warps, k.dense.stages, k.dense.max_splits), (32, 8, 3, 8));
    assert_eq!((k.prefill.block_n, k.prefill.warps, k.prefill.rows, k.prefill.max_splits), (32, 8, 32, 8));
    // Another batch is another bucket: untuned.
    assert!(!decoder_choices(&rt, Some(&url), &c, 8, 3000, 33).dense.tuned);

    // The same tokens through both models: a prompt (prefill: TreeVerify over chunks of 32
    // and 8) then three single tokens (DenseDecode); the same logits up to the bf16
    // rounding of other split orders.
    let w = GpuWeights::random(&rt, &c, 5).unwrap();
    let ids = |n: u32, k: u32| -> Vec<u32> { (0..n).map(|i| (i * 7919 + k) % c.vocab as u32).collect() };
    let (prompt, steps) = (ids(40, 11), ids(3, 5));
    let logits = |m: &mut GpuModel| -> Vec<Vec<f32>> {
        m.forward(&prompt, prompt.len()).unwrap();
        let mut out = vec![m.logits_host().unwrap()];
        for &id in &steps {
            m.forward(&[id], 1).unwrap();
            out.push(m.logits_host().unwrap());
        }
        out
    };
    let mut a = GpuModel::with_choices(rt, w, 1, 3000, untuned.choices.clone()).unwrap();
    let base = logits(&mut a);
    let (rt, w) = a.into_parts();
    let mut b = GpuModel::with_choices(rt, w, 1, 3000, tuned.choices.clone()).unwrap();
    let got = logits(&mut b);
    for (step, (x, y)) in base.iter().zip(&got).enumerate() {
        let scale = x.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let worst = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 2e-2 * scale, "step {step}: logits differ by {worst} (scale {scale})");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
