//! One suite, run against SQLite (a temp file) always and against PostgreSQL when
//! `TESSERA_TEST_POSTGRES_URL` is set (each test gets its own database). In CI
//! (`CI` set) the PostgreSQL URL is required.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;
use sqlx::{AssertSqlSafe, Connection};
use tessera_tuning_db::*;

pub struct Env {
    pub url: String,
}

static N: AtomicU64 = AtomicU64::new(0);

fn unique(name: &str) -> String {
    format!("tdb_{}_{}_{}", name, std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn with_sqlite(name: &str, case: fn(&Env)) {
    let dir: PathBuf = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    let env = Env { url: format!("sqlite://{}", dir.join("tuning.sqlite").display()) };
    case(&env);
    let _ = std::fs::remove_dir_all(&dir);
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn with_postgres(name: &str, case: fn(&Env)) {
    let base = match std::env::var("TESSERA_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but TESSERA_TEST_POSTGRES_URL is not: the PostgreSQL half of the tuning-db suite must run in CI");
            }
            // Straight to stderr, past libtest's capture, so the skip is seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!! SKIPPED postgres::{name}: TESSERA_TEST_POSTGRES_URL is not set (scripts/test.sh starts a server) !!!!!"
            );
            return;
        }
    };
    let db = unique(name);
    let (prefix, query) = match base.split_once('?') {
        Some((p, q)) => (p.to_string(), format!("?{q}")),
        None => (base.clone(), String::new()),
    };
    let server = prefix.rsplit_once('/').map(|(s, _)| s.to_string()).unwrap_or(prefix.clone());
    let admin = |sql: String| {
        rt().block_on(async {
            let mut c = sqlx::PgConnection::connect(&base).await.expect("connect to TESSERA_TEST_POSTGRES_URL");
            sqlx::query(AssertSqlSafe(sql)).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        })
    };
    admin(format!("CREATE DATABASE {db}"));
    let env = Env { url: format!("{server}/{db}{query}") };
    case(&env);
    admin(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::with_sqlite(stringify!($name), super::cases::$name) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::with_postgres(stringify!($name), super::cases::$name) } )*
        }
    };
}

suite!(
    migrate_twice_is_noop,
    record_and_winner,
    stale_keys_never_match,
    prune_removes_stale_rows,
    export_import_round_trip,
    concurrent_writers,
    failed_transaction_leaves_nothing,
    failed_import_leaves_nothing,
    resumability,
);

mod cases {
    use super::*;

    pub fn device() -> DeviceFingerprint {
        DeviceFingerprint {
            gpu_name: "NVIDIA H200".into(),
            compute_capability: "9.0".into(),
            uuid: "GPU-00000000-1111-2222-3333-444444444444".into(),
            driver_version: "13.0".into(),
        }
    }

    pub fn key(kernel: &str, n: u64) -> TuneKey {
        TuneKey {
            kernel: kernel.into(),
            dtype: "f16".into(),
            shape_bucket: ShapeBucket::new().pow2("n", n).exact("b", 8).build(),
            device: device(),
            nvrtc_version: "12.8".into(),
            tessera_version: "0.1.0".into(),
            source_hash: source_hash(&format!("source of {kernel}")),
            candidates_checksum: candidates_checksum(&[json!({"bm": 64}), json!({"bm": 128})]),
        }
    }

    pub fn trials() -> Vec<Trial> {
        vec![
            Trial::ok(json!({"bm": 64, "warps": 4}), 12.5, 12.0, 13.5),
            Trial::ok(json!({"warps": 8, "bm": 128}), 9.25, 9.0, 9.75),
            Trial::failed(json!({"bm": 256, "warps": 8}), TrialStatus::LaunchFault, "illegal address"),
            Trial::failed(
                json!({"bm": 512, "warps": 8}),
                TrialStatus::CompileError,
                "too much shared memory, \"64 KiB\"\nline 2",
            ),
        ]
    }

    pub fn record(db: &TuningDb, run: &RunId, k: &TuneKey) {
        let ts = trials();
        db.record_run(run, k, &ts, Trial::fastest(&ts)).unwrap();
    }

    fn open(env: &Env) -> TuningDb {
        TuningDb::open(Some(&env.url)).unwrap()
    }

    /// Through the async API on a runtime of our own (a pool stays on the runtime that made it).
    fn applied_migrations(env: &Env) -> i64 {
        let sql = "SELECT COUNT(*) FROM _sqlx_migrations";
        rt().block_on(async {
            let db = AsyncTuningDb::open(Some(&env.url)).await.unwrap();
            let n = match db.backend() {
                Backend::Sqlite(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await.unwrap(),
                Backend::Postgres(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await.unwrap(),
            };
            db.close().await;
            n
        })
    }

    pub fn migrate_twice_is_noop(env: &Env) {
        let db = open(env);
        let run = db.start_run("0.1.0", "test").unwrap();
        record(&db, &run, &key("flash_decode", 30000));
        let before = db.counts().unwrap();
        db.migrate().unwrap();
        db.migrate().unwrap();
        drop(db);
        let db = open(env); // migrates again on open
        assert_eq!(db.counts().unwrap(), before);
        assert_eq!(before, (1, 1, 4, 1));
        assert_eq!(applied_migrations(env), 1);
    }

    pub fn record_and_winner(env: &Env) {
        let db = open(env);
        let k = key("flash_decode", 30000);
        assert_eq!(k.shape_bucket, "n=32768,b=8");
        assert!(db.winner(&k).unwrap().is_none());
        let run = db.start_run("0.1.0", "first").unwrap();
        record(&db, &run, &k);
        let w = db.winner(&k).unwrap().expect("winner");
        assert_eq!(w.config, json!({"bm": 128, "warps": 8}));
        assert_eq!(w.median_us, 9.25);
        assert_eq!((w.p10_us, w.p90_us), (Some(9.0), Some(9.75)));
        assert_eq!(w.run_id.as_deref(), Some(run.0.as_str()));
        // The same shape bucket from another sequence length inside it.
        assert_eq!(db.winner(&key("flash_decode", 32768)).unwrap(), Some(w.clone()));

        let list = db.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].trials, list[0].ok_trials), (4, 2));
        assert_eq!(list[0].key, k);
        let show = db.show("flash_decode").unwrap();
        assert_eq!(show.len(), 1);
        let st: Vec<TrialStatus> = show[0].trials.iter().map(|t| t.trial.status).collect();
        assert_eq!(st[..2], [TrialStatus::Ok, TrialStatus::Ok]);
        assert_eq!(show[0].trials[0].trial.median_us, Some(9.25));
        let ce = show[0].trials.iter().find(|t| t.trial.status == TrialStatus::CompileError).unwrap();
        assert!(ce.trial.error.as_deref().unwrap().contains("\"64 KiB\"\nline 2"));
        assert!(db.show("other").unwrap().is_empty());

        // A later run replaces the winner; its trials are kept beside the first run's.
        let run2 = db.start_run("0.1.0", "second").unwrap();
        let faster = Trial::ok(json!({"bm": 64, "warps": 8}), 8.0, 7.5, 8.5);
        db.record_run(&run2, &k, std::slice::from_ref(&faster), Some(&faster)).unwrap();
        let w2 = db.winner(&k).unwrap().unwrap();
        assert_eq!(w2.config, json!({"bm": 64, "warps": 8}));
        assert_eq!(db.list().unwrap()[0].trials, 5);
        // A failed trial cannot win.
        let bad = Trial::failed(json!({}), TrialStatus::Timeout, "timeout");
        assert!(db.record_run(&run2, &k, &[], Some(&bad)).is_err());
        // set_winner works without trials.
        let k2 = key("row_softmax", 4096);
        db.set_winner(&k2, &Trial::ok(json!({"rows": 4}), 3.0, 2.9, 3.1)).unwrap();
        assert_eq!(db.winner(&k2).unwrap().unwrap().run_id, None);
        assert_eq!(db.list().unwrap().len(), 2);
    }

    pub fn stale_keys_never_match(env: &Env) {
        let db = open(env);
        let k = key("flash_decode", 30000);
        let run = db.start_run("0.1.0", "").unwrap();
        record(&db, &run, &k);
        let mut variants = Vec::new();
        let mut v = k.clone();
        v.source_hash = source_hash("edited kernel");
        variants.push(v);
        let mut v = k.clone();
        v.nvrtc_version = "12.9".into();
        variants.push(v);
        let mut v = k.clone();
        v.device.driver_version = "13.1".into();
        variants.push(v);
        let mut v = k.clone();
        v.device.uuid = "GPU-other".into();
        variants.push(v);
        let mut v = k.clone();
        v.tessera_version = "0.2.0".into();
        variants.push(v);
        let mut v = k.clone();
        v.candidates_checksum = candidates_checksum(&[json!({"bm": 64})]);
        variants.push(v);
        let mut v = k.clone();
        v.dtype = "bf16".into();
        variants.push(v);
        variants.push(key("flash_decode", 70000));
        for v in &variants {
            assert_eq!(db.winner(v).unwrap(), None, "{v:?}");
            assert!(!db.has_fresh(v).unwrap(), "{v:?}");
        }
        assert!(db.fresh_keys(&variants).unwrap().is_empty());
        assert!(db.winner(&k).unwrap().is_some());
    }

    pub fn prune_removes_stale_rows(env: &Env) {
        let db = open(env);
        let current = key("flash_decode", 30000);
        let mut old_tessera = key("row_softmax", 1024);
        old_tessera.tessera_version = "0.0.9".into();
        let mut old_nvrtc = key("flash_decode", 1024);
        old_nvrtc.nvrtc_version = "12.4".into();
        let mut old_source = key("flash_decode", 4096);
        old_source.source_hash = source_hash("old source");
        let mut old_driver = key("matmul", 512);
        old_driver.device.driver_version = "12.2".into();
        let other_kernel = key("matmul", 1024); // current everything; its hash is not checked
        let run_old = db.start_run("0.0.9", "old").unwrap();
        for k in [&old_tessera, &old_nvrtc, &old_source, &old_driver] {
            record(&db, &run_old, k);
        }
        let run = db.start_run("0.1.0", "new").unwrap();
        record(&db, &run, &current);
        record(&db, &run, &other_kernel);
        assert_eq!(db.counts().unwrap(), (2, 2, 24, 6));

        // Without NVRTC / driver / hashes only other Tessera versions go.
        let r = db.prune(&CurrentVersions { tessera_version: "0.1.0".into(), ..Default::default() }).unwrap();
        assert_eq!(r, PruneReport { trials: 4, winners: 1, runs: 0, devices: 0 });

        let cur = CurrentVersions {
            tessera_version: "0.1.0".into(),
            nvrtc_version: Some("12.8".into()),
            driver_version: Some("13.0".into()),
            device_uuids: vec![current.device.uuid.clone()],
            source_hashes: [("flash_decode".to_string(), current.source_hash.clone())].into(),
        };
        let r = db.prune(&cur).unwrap();
        assert_eq!(r, PruneReport { trials: 12, winners: 3, runs: 1, devices: 1 });
        assert_eq!(db.counts().unwrap(), (1, 1, 8, 2));
        assert!(db.winner(&current).unwrap().is_some());
        assert!(db.winner(&other_kernel).unwrap().is_some());
        for k in [&old_tessera, &old_nvrtc, &old_source, &old_driver] {
            assert!(db.winner(k).unwrap().is_none());
        }
        // Nothing left to prune.
        assert_eq!(db.prune(&cur).unwrap(), PruneReport::default());

        // Another machine of the fleet, under another driver: its rows are not this
        // machine's to prune.
        let mut other_machine = key("matmul", 2048);
        other_machine.device.uuid = "GPU-other-machine".into();
        other_machine.device.driver_version = "12.2".into();
        record(&db, &run, &other_machine);
        db.prune(&cur).unwrap();
        assert!(db.winner(&other_machine).unwrap().is_some());
    }

    pub fn export_import_round_trip(env: &Env) {
        let db = open(env);
        let run = db.start_run("0.1.0", "a \"quoted\", note").unwrap();
        record(&db, &run, &key("flash_decode", 30000));
        record(&db, &run, &key("flash_decode", 1000));
        db.set_winner(&key("row_softmax", 64), &Trial::ok(json!({"rows": 2}), 1.5, 1.4, 1.6)).unwrap();
        let json = db.export(ExportFormat::Json).unwrap();
        let dump_a = db.dump().unwrap();

        // Into a fresh SQLite file (the JSON is backend-neutral) and back into this one.
        let dir = std::env::temp_dir().join(unique("import"));
        let other = TuningDb::open(Some(dir.join("b.sqlite").to_str().unwrap())).unwrap();
        let rep = other.import(&json).unwrap();
        assert_eq!(rep, ImportReport { devices: 1, runs: 1, trials: 8, winners: 3 });
        assert_eq!(other.dump().unwrap(), dump_a);
        assert_eq!(other.export(ExportFormat::Json).unwrap(), json);
        // Idempotent, both ways.
        assert_eq!(other.import(&json).unwrap(), ImportReport::default());
        assert_eq!(db.import(&other.export(ExportFormat::Json).unwrap()).unwrap(), ImportReport::default());
        assert_eq!(db.dump().unwrap(), dump_a);
        assert_eq!(other.winner(&key("flash_decode", 30000)).unwrap(), db.winner(&key("flash_decode", 30000)).unwrap());
        drop(other);
        let _ = std::fs::remove_dir_all(&dir);

        // CSV: a header and one line per trial, winners marked, fields quoted.
        let csv = db.export(ExportFormat::Csv).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].starts_with("kernel,dtype,shape_bucket,gpu_name,"));
        assert!(lines[0].ends_with(",winner"));
        // The compile error's text holds a newline inside quotes: count records, not lines.
        let records = csv.matches("\nflash_decode,").count();
        assert_eq!(records, 8);
        assert_eq!(lines.iter().filter(|l| l.ends_with(",1")).count(), 2);
        assert!(csv.contains("\"{\"\"bm\"\":128,\"\"warps\"\":8}\""));
        assert!(csv.contains("\"too much shared memory, \"\"64 KiB\"\"\nline 2\""));

        // Garbage is refused.
        assert!(db.import("{\"format\": \"something-else\"}").is_err());
        assert!(db.import("not json").is_err());
    }

    pub fn concurrent_writers(env: &Env) {
        // Two handles = two pools (two processes' worth), writing at once.
        open(env); // create + migrate first, as the tuner does on start
        let per_writer = 30;
        let handles: Vec<_> = (0..2)
            .map(|w| {
                let url = env.url.clone();
                std::thread::spawn(move || {
                    let db = TuningDb::open(Some(&url)).unwrap();
                    let run = db.start_run("0.1.0", &format!("writer {w}")).unwrap();
                    for i in 0..per_writer {
                        let k = key(&format!("kernel_{w}"), 1 << i.min(40));
                        let mut k = k;
                        k.shape_bucket = format!("i={i}");
                        record(&db, &run, &k);
                        // Reads interleaved with the other writer's transactions.
                        assert!(db.has_fresh(&k).unwrap());
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer failed");
        }
        let db = open(env);
        assert_eq!(db.counts().unwrap(), (1, 2, 2 * per_writer as i64 * 4, 2 * per_writer as i64));
        assert_eq!(db.list().unwrap().len(), 2 * per_writer);
    }

    pub fn failed_transaction_leaves_nothing(env: &Env) {
        let db = open(env);
        let run = db.start_run("0.1.0", "").unwrap();
        let k = key("flash_decode", 30000);
        // The third trial repeats the first config: its insert fails on the primary key,
        // after the device row and two trials were written inside the transaction.
        let mut ts = trials();
        ts.insert(2, ts[0].clone());
        let err = db.record_run(&run, &k, &ts, Trial::fastest(&ts)).unwrap_err();
        assert!(matches!(err, Error::Sqlx(_)), "{err}");
        assert_eq!(db.counts().unwrap(), (0, 1, 0, 0));
        assert!(db.winner(&k).unwrap().is_none());
        assert!(!db.has_fresh(&k).unwrap());
        // The handle still works afterwards.
        record(&db, &run, &k);
        assert_eq!(db.counts().unwrap(), (1, 1, 4, 1));
    }

    pub fn failed_import_leaves_nothing(env: &Env) {
        let db = open(env);
        let run = db.start_run("0.1.0", "").unwrap();
        record(&db, &run, &key("flash_decode", 30000));
        let mut dump = db.dump().unwrap();
        let dir = std::env::temp_dir().join(unique("badimport"));
        let other = TuningDb::open(Some(dir.join("b.sqlite").to_str().unwrap())).unwrap();
        // The last trial points at a run that is not in the file: a foreign-key error
        // after everything else was inserted.
        let mut t = dump.trials[0].clone();
        t.id = "feedfacefeedface".into();
        t.run_id = "no-such-run".into();
        dump.trials.push(t);
        let json = serde_json::to_string(&dump).unwrap();
        assert!(other.import(&json).is_err());
        assert_eq!(other.counts().unwrap(), (0, 0, 0, 0));
        // And into the original database (where the other rows already exist).
        assert!(db.import(&json).is_err());
        assert_eq!(db.counts().unwrap(), (1, 1, 4, 1));
        drop(other);
        let _ = std::fs::remove_dir_all(&dir);
    }

    pub fn resumability(env: &Env) {
        let db = open(env);
        let keys: Vec<TuneKey> = [1024u64, 2048, 4096, 8192].iter().map(|&n| key("flash_decode", n)).collect();
        let run = db.start_run("0.1.0", "killed half way").unwrap();
        record(&db, &run, &keys[0]);
        // Every candidate failed: no winner, but the key is done.
        let failed = vec![Trial::failed(json!({"bm": 64}), TrialStatus::WrongResult, "max abs err 3.2")];
        db.record_run(&run, &keys[2], &failed, None).unwrap();
        assert_eq!(db.fresh_keys(&keys).unwrap(), vec![keys[0].clone(), keys[2].clone()]);
        assert!(db.has_fresh(&keys[2]).unwrap());
        assert!(!db.has_fresh(&keys[1]).unwrap());
        assert!(db.winner(&keys[2]).unwrap().is_none());
        // A restarted run does the rest.
        let todo: Vec<&TuneKey> = {
            let fresh = db.fresh_keys(&keys).unwrap();
            keys.iter().filter(|k| !fresh.contains(k)).collect()
        };
        assert_eq!(todo, vec![&keys[1], &keys[3]]);
        let run2 = db.start_run("0.1.0", "resumed").unwrap();
        for k in todo {
            record(&db, &run2, k);
        }
        assert_eq!(db.fresh_keys(&keys).unwrap(), keys);
    }
}
