//! Centroid lookup (Squeezed Attention) on the interpreter: k-means against the CPU
//! k-means from the same seeds, and the decode path against the f64 reference.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_kernels::cases::{CentroidCase, KernelCase};
use tessera_kernels::centroid::{cluster_layout, init_centroids, kmeans_reference, KMeansCluster};
use tessera_kernels::reference::DecodeDims;

fn dims(batch: usize, kv_heads: usize, group: usize, cap: usize, head_dim: usize) -> DecodeDims {
    DecodeDims { batch, kv_heads, group, cap, head_dim }
}

/// Keys from a mixture of `m` random directions (scaled 0.5–2) plus noise.
fn mixture(b: usize, h: usize, cap: usize, d: usize, m: usize, noise: f64, seed: u64) -> HostTensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(b * h * cap * d);
    for _ in 0..b * h {
        let centres: Vec<f64> = (0..m * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        for _ in 0..cap {
            let c = rng.random_range(0..m);
            let s = rng.random_range(0.5..2.0);
            for e in 0..d {
                v.push(s * centres[c * d + e] + rng.random_range(-noise..noise));
            }
        }
    }
    HostTensor::from_f64(DType::BF16, &[b, h, cap, d], &v)
}

#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn kmeans_case(b: usize, h: usize, tf: usize, n: usize, d: usize, c: usize, iters: usize, normalize: bool, seed: u64) {
    let cap = n + 3;
    let k = mixture(b, h, cap, d, c + 2, 0.3, seed);
    let v = mixture(b, h, cap, d, 3, 1.0, seed + 1);
    let kf = k.to_f64();
    let mut init = Vec::new();
    for bh in 0..b * h {
        init.extend(init_centroids(&kf[bh * cap * d..(bh * cap + tf) * d], tf, d, c, normalize, 77 + bh as u64));
    }
    let init_t = HostTensor::from_f64(DType::F32, &[b, h, c, d], &init);
    let op = KMeansCluster::cpu(d, normalize, 32, 16).unwrap();
    let mut ko = HostTensor::full(DType::BF16, &[b, h, cap, d], 0.0);
    let mut vo = HostTensor::full(DType::BF16, &[b, h, cap, d], 0.0);
    let t = std::time::Instant::now();
    let out = op.run_cpu(&k, &v, tf, n, &init_t, iters, &mut ko, &mut vo).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let (lab, cen, cnt) = (out.labels.to_f64(), out.centroids.to_f64(), out.counts.to_f64());
    let (kof, vf, vof) = (ko.to_f64(), v.to_f64(), vo.to_f64());
    let (init_f, mut worst) = (init_t.to_f64(), 0.0f64);
    for bh in 0..b * h {
        let keys = &kf[bh * cap * d..(bh * cap + tf) * d];
        let want = kmeans_reference(keys, tf, d, &init_f[bh * c * d..(bh + 1) * c * d], iters, normalize);
        let got: Vec<usize> = lab[bh * tf..(bh + 1) * tf].iter().map(|&x| x as usize).collect();
        assert_eq!(got, want.labels, "(b,h) {bh}: labels differ from the CPU k-means");
        let gc: Vec<usize> = cnt[bh * c..(bh + 1) * c].iter().map(|&x| x as usize).collect();
        assert_eq!(gc, want.counts);
        for (x, y) in cen[bh * c * d..(bh + 1) * c * d].iter().zip(&want.centroids) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "(b,h) {bh}: centroid {x} vs {y}");
            worst = worst.max((x - y).abs());
        }
        let (perm, _starts) = cluster_layout(&want.labels, c);
        for r in 0..n {
            let src = if r < tf { perm[r] } else { r };
            let (a, s) = ((bh * cap + r) * d, (bh * cap + src) * d);
            assert_eq!(&kof[a..a + d], &kf[s..s + d], "(b,h) {bh} row {r}");
            assert_eq!(&vof[a..a + d], &vf[s..s + d], "(b,h) {bh} row {r}");
        }
        let used = want.counts.iter().filter(|&&x| x > 0).count();
        eprintln!("(b,h) {bh}: {used}/{c} clusters used, sizes {:?}", &want.counts[..c.min(12)]);
    }
    eprintln!("kmeans B{b} Hkv{h} Tf{tf} N{n} D{d} C{c} I{iters} norm {normalize}: labels equal, centroid err {worst:.1e} ({secs:.2} s)");
}

#[test]
fn kmeans_matches_cpu_kmeans_from_the_same_seeds() {
    kmeans_case(1, 2, 300, 310, 64, 8, 6, true, 1);
    kmeans_case(2, 1, 517, 517, 32, 13, 4, false, 2);
    kmeans_case(1, 1, 1000, 1040, 128, 40, 5, true, 3);
    kmeans_case(1, 1, 50, 60, 16, 50, 2, true, 4); // one key per cluster
    kmeans_case(1, 1, 200, 200, 16, 7, 1, false, 5);
}

fn run(c: &mut CentroidCase) {
    let t = std::time::Instant::now();
    c.run_cpu().unwrap_or_else(|e| panic!("{}: {e}", c.name()));
    let e = c.check().unwrap_or_else(|e| panic!("{}: {e}", c.name()));
    let kept: Vec<f64> = c.keep_count.to_f64();
    eprintln!("{}: rel err {e:.2e}, kept clusters {kept:?} ({:.2} s)", c.name(), t.elapsed().as_secs_f64());
}

#[test]
fn centroid_decode_matches_reference() {
    let inf = f32::NEG_INFINITY;
    // (dims, fixed, seq, clusters, iters, keep, pack_programs, threshold)
    run(&mut CentroidCase::new("centroid", dims(1, 2, 4, 700, 64), 600, 650, 30, 3, 5, 2, inf, 1));
    run(&mut CentroidCase::new("centroid", dims(2, 1, 3, 400, 128), 333, 399, 17, 2, 17, 4, inf, 2));
    run(&mut CentroidCase::new("centroid", dims(1, 3, 1, 300, 64), 300, 300, 20, 2, 7, 3, inf, 3)); // no recent rows
    run(&mut CentroidCase::new("centroid", dims(1, 2, 2, 500, 64), 450, 499, 25, 2, 25, 5, -8.6, 4)); // threshold
    run(&mut CentroidCase::new("centroid", dims(1, 1, 2, 256, 32), 200, 256, 10, 2, 3, 1, 10.0, 5));
    // keeps none
    // More clusters than one scoring tile (64): the normalizer is merged from 3 partials;
    // the threshold variant depends on it.
    run(&mut CentroidCase::new("centroid", dims(1, 2, 4, 1600, 64), 1500, 1590, 150, 2, 20, 4, inf, 6));
    run(&mut CentroidCase::new("centroid", dims(1, 2, 4, 1600, 64), 1500, 1590, 150, 2, 40, 4, -9.5, 7));
}

/// bf16 centroids (`CentroidDecode::with_centroid_dtype`): the scoring reads the rounded
/// centroids (staged, tensor-core `q · c` on the GPU) and the selection must be the exact
/// one of the rounded values — top-k and threshold, one and several scoring tiles.
#[test]
fn centroid_decode_with_bf16_centroids_matches_reference() {
    let inf = f32::NEG_INFINITY;
    let bf16 = |c: CentroidCase| c.with_centroid_dtype(DType::BF16);
    run(&mut bf16(CentroidCase::new("centroid", dims(1, 2, 4, 700, 64), 600, 650, 30, 3, 5, 2, inf, 11)));
    run(&mut bf16(CentroidCase::new("centroid", dims(2, 1, 3, 400, 128), 333, 399, 17, 2, 17, 4, inf, 12)));
    run(&mut bf16(CentroidCase::new("centroid", dims(1, 2, 4, 1600, 64), 1500, 1590, 150, 2, 40, 4, -9.5, 13)));
    // The op refuses centroids of another type than it was built for, before running.
    let c = CentroidCase::new("centroid", dims(1, 2, 4, 700, 64), 600, 650, 30, 3, 5, 2, inf, 14);
    let err = c.with_centroid_dtype(DType::F16).run_cpu().expect_err("f16 centroids are refused");
    assert!(format!("{err}").contains("f32 or bf16"), "{err}");
}

#[test]
fn centroid_refuses_bad_arguments() {
    let op = KMeansCluster::cpu(64, true, 32, 32).unwrap();
    let k = HostTensor::full(DType::BF16, &[1, 2, 100, 64], 0.0);
    let init = HostTensor::full(DType::F32, &[1, 2, 8, 64], 0.0);
    let mut o = k.clone();
    let mut o2 = k.clone();
    assert!(op.run_cpu(&k, &k, 5, 50, &init, 1, &mut o, &mut o2).is_err()); // fewer keys than clusters
    assert!(op.run_cpu(&k, &k, 60, 50, &init, 1, &mut o, &mut o2).is_err()); // fixed > seq
    let bad = HostTensor::full(DType::F32, &[1, 2, 8, 32], 0.0);
    assert!(op.run_cpu(&k, &k, 50, 50, &bad, 1, &mut o, &mut o2).is_err());
    assert!(op.run_cpu(&k, &k, 50, 50, &init, 0, &mut o, &mut o2).is_err()); // no iteration
    assert!(KMeansCluster::cpu(64, true, 0, 32).is_err());
}

#[test]
fn centroid_kernels_emit_cuda() {
    use tessera_codegen::emit::emit_cuda;
    use tessera_dsl_support::KernelConfig;
    use tessera_kernels::centroid::*;
    let c = |p: &[(&str, i64)]| KernelConfig::from_pairs(p);
    for kern in [
        KmeansAssign::build(&c(&[("HEAD_DIM", 128), ("NORMALIZE", 1), ("KEY_TILE", 64), ("C_TILE", 64), ("WARPS", 4)]))
            .unwrap(),
        KmeansAccumulate::build(&c(&[("HEAD_DIM", 128), ("NORMALIZE", 1), ("KEY_TILE", 64), ("WARPS", 4)])).unwrap(),
        KmeansFinalize::build(&c(&[("HEAD_DIM", 128), ("C_TILE", 32), ("WARPS", 4)])).unwrap(),
        CentroidPermute::build(&c(&[("HEAD_DIM", 128), ("ROWS", 64), ("WARPS", 4)])).unwrap(),
        CentroidTileLse::build(&c(&[("GROUP", 4), ("HEAD_DIM", 128), ("C_TILE", 64), ("WARPS", 4), ("CT", 2)]))
            .unwrap(),
        // bf16 centroids (`CentroidDecode::with_centroid_dtype`): staged, tensor-core `q · c`.
        CentroidTileLse::build(&c(&[("GROUP", 4), ("HEAD_DIM", 128), ("C_TILE", 64), ("WARPS", 4), ("CT", 0)]))
            .unwrap(),
        CentroidSelect::build(&c(&[("KEEP", 656), ("CAND", 8192), ("GROUP", 4), ("MAX_TILES", 128), ("WARPS", 4)]))
            .unwrap(),
        CentroidPackRows::build(&c(&[("KEEP", 656), ("PROGRAMS", 16), ("WARPS", 4)])).unwrap(),
    ] {
        let e = emit_cuda(&kern);
        assert!(!e.source.is_empty(), "{}", kern.name);
        // NVRTC needs no GPU; skip quietly where the library is absent.
        match tessera_runtime::compile_ptx(&e.source, &e.entry, "sm_90a") {
            Ok(p) => eprintln!(
                "{}: PTX ok ({} B), {} threads, {} B shared",
                kern.name,
                p.ptx.len(),
                e.threads,
                e.shared_bytes
            ),
            Err(err) if format!("{err}").to_lowercase().contains("nvrtc") && !format!("{err}").contains("error:") => {
                eprintln!("{}: no NVRTC here ({err})", kern.name)
            }
            Err(err) => panic!("{}: {err}", kern.name),
        }
    }
}

/// A threshold calibrated on some queries keeps about the wanted share of keys for other
/// queries from the same distribution (the decode op keeping exactly the clusters above a
/// threshold is `centroid_decode_matches_reference`'s threshold cases).
#[test]
fn calibrated_threshold_keeps_the_target_share() {
    use tessera_kernels::centroid_calibration::{calibrate_threshold, calibration_samples, kept_fraction};
    let (b, h, g, d, tf, c) = (1, 2, 4, 64, 1200, 60);
    let k = mixture(b, h, tf, d, 12, 0.3, 21);
    let v = mixture(b, h, tf, d, 3, 1.0, 22);
    let kf = k.to_f64();
    let mut init = Vec::new();
    for bh in 0..b * h {
        init.extend(init_centroids(&kf[bh * tf * d..(bh + 1) * tf * d], tf, d, c, true, 5 + bh as u64));
    }
    let init = HostTensor::from_f64(DType::F32, &[b, h, c, d], &init);
    let (mut kp, mut vp) = (k.clone(), v.clone());
    let co = KMeansCluster::cpu(d, true, 64, 64).unwrap().run_cpu(&k, &v, tf, tf, &init, 3, &mut kp, &mut vp).unwrap();
    // Queries near the key directions (as real queries are), 48 positions: calibrate on
    // the first 32, hold out the last 16.
    let q = mixture(b, h * g, 48, d, 12, 0.5, 23);
    let rows = |lo: usize, hi: usize| {
        let qf = q.to_f64();
        let mut out = Vec::new();
        for hq in 0..h * g {
            out.extend_from_slice(&qf[(hq * 48 + lo) * d..(hq * 48 + hi) * d]);
        }
        HostTensor::from_f64(DType::F32, &[b, h * g, hi - lo, d], &out)
    };
    let scale = tessera_kernels::default_scale_log2(d) as f64;
    let cal = calibration_samples(&rows(0, 32), &co.centroids, &co.counts, g, scale).unwrap();
    let held = calibration_samples(&rows(32, 48), &co.centroids, &co.counts, g, scale).unwrap();
    for target in [0.1, 0.2, 0.5] {
        let t = calibrate_threshold(&cal, target);
        let (on_cal, on_held) = (kept_fraction(&cal, t), kept_fraction(&held, t));
        eprintln!("target {target}: threshold {t:.3}, kept {on_cal:.3} (calibration), {on_held:.3} (held out)");
        assert!(on_cal >= target && on_cal < target + 0.1, "{on_cal}");
        assert!((on_held - target).abs() < 0.15, "held out {on_held} for {target}");
    }
}
