//! `tessera decoder-check`: validates the decoder's GPU path on a real model and measures
//! its speed (issue 7).
//!
//! 1. Golden prompts (tests/fixtures/smollm2_golden.json, compiled in): GPU first-step
//!    logits vs the fixture's top-10 (bf16: relative error ≤ `--tol`), GPU greedy ids vs
//!    the CPU f32 path for `--greedy-tokens` tokens and vs the fixture's ids.
//! 2. The chat answer to "What is the capital of France?" mentions Paris.
//! 3. Decode speed of the model at each `--contexts` × `--batches` (a real-token prompt
//!    filling the context, then timed greedy steps), with the prefill time.
//! 4. A random-weight model with Llama-3-8B shapes (made on the GPU) over a random KV cache
//!    at each `--llama-contexts`, batch 1: decode ms/token and attention's share.
//!
//! Every model takes its attention configurations from the tuning database (`--db`;
//! [`tessera::dispatch::decoder_choices`]), the decoder's heuristics where a shape is not
//! tuned. Prints a table, writes `--json` (each speed row with the configurations it ran),
//! and the prompts used (`--prompts`, for the HF peer). Exit code 1 when a check fails.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tessera::dispatch::decoder_choices;
use tessera_decoder::gpu::bench::{decode_after_prefill, decode_over_random_cache, DecodeSpeed};
use tessera_decoder::gpu::validate::{check_case, first_mismatch, parse_golden};
use tessera_decoder::gpu::{GpuModel, GpuWeights};
use tessera_decoder::{generate, CpuModel, GgufFile, GgufTokenizer, LlamaConfig, LlamaWeights, Sampler};
use tessera_runtime::Runtime;

const GOLDEN: &str = include_str!("../../tests/fixtures/smollm2_golden.json");

/// Text repeated to fill the speed runs' prompts (real tokens, not random ids).
const FILLER: &str = "The history of the printing press begins in the fifteenth century, when movable \
type changed how knowledge travelled across Europe. Scholars, merchants and clergy could now own \
copies of texts that had been rare, and new ideas spread from city to city within months. ";

#[derive(clap::Args)]
pub struct Args {
    /// The model: a llama-architecture GGUF file (SmolLM2-135M-Instruct for the golden checks).
    #[arg(long)]
    model: PathBuf,
    /// Greedy tokens compared between the GPU and the CPU path per golden prompt.
    #[arg(long, default_value_t = 32)]
    greedy_tokens: usize,
    /// Relative tolerance of the GPU logits against the golden ones (bf16).
    #[arg(long, default_value_t = 2e-2)]
    tol: f64,
    /// Contexts of the model's speed runs (prompt + decoded tokens), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1024,8192")]
    contexts: Vec<usize>,
    /// Batch sizes of the model's speed runs.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batches: Vec<usize>,
    /// Timed decode steps per speed run (after 4 warm-up steps).
    #[arg(long, default_value_t = 128)]
    steps: usize,
    /// Contexts of the random Llama-3-8B-shape runs.
    #[arg(long, value_delimiter = ',', default_value = "32768,131072")]
    llama_contexts: Vec<usize>,
    /// Skips the random Llama-3-8B-shape runs.
    #[arg(long)]
    no_llama: bool,
    /// Timed decode steps of the Llama-3-8B-shape runs.
    #[arg(long, default_value_t = 32)]
    llama_steps: usize,
    /// Layers of the Llama-3-8B-shape model (32; fewer for smaller GPUs).
    #[arg(long, default_value_t = 32)]
    llama_layers: usize,
    /// Writes every result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Writes the speed runs' prompt ids here (`{"CONTEXT": [ids]}`, for bench/peers/decoder_peer.py).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Tuning database every model takes its attention configurations from (default
    /// `TESSERA_DB`, else the SQLite file in the cache folder); untuned shapes run the
    /// decoder's heuristics. The JSON's speed rows say what ran.
    #[arg(long)]
    db: Option<String>,
}

/// A model of `w` at `batch` sequences and a cache of `context` positions, its attention
/// configured through the tuning database for a prompt of `prefill` tokens; with what was
/// chosen (JSON).
fn model(
    rt: Runtime,
    w: GpuWeights,
    db: Option<&str>,
    batch: usize,
    context: usize,
    prefill: usize,
) -> Result<(GpuModel, Value)> {
    let chosen = decoder_choices(&rt, db, &w.config, batch, context, prefill);
    let m = GpuModel::with_choices(rt, w, batch, context, chosen.choices.clone())
        .with_context(|| format!("model at batch {batch}, context {context}"))?;
    Ok((m, chosen.json()))
}

const WARMUP: usize = 4;

fn speed_json(model: &str, s: &DecodeSpeed, context: usize, kernels: Value) -> Value {
    json!({
        "model": model, "batch": s.batch, "context": context, "start_len": s.start_len,
        "prefill_ms": s.prefill_ms, "steps": s.steps, "ms_per_step": s.ms_per_step,
        "tokens_per_s": s.tokens_per_s, "attn_ms_per_step": s.attn_ms_per_step, "attn_share": s.attn_share(),
        "kernels": kernels,
    })
}

fn speed_row(model: &str, s: &DecodeSpeed, context: usize) -> String {
    let prefill = s.prefill_ms.map_or("-".to_string(), |p| format!("{p:.1}"));
    format!(
        "{model:<22} {:>5} {context:>8} {prefill:>11} {:>9.3} {:>10.1} {:>9.3} {:>6.1}%",
        s.batch,
        s.ms_per_step,
        s.tokens_per_s,
        s.attn_ms_per_step,
        100.0 * s.attn_share()
    )
}

/// `n` real tokens: the filler text's ids repeated.
fn filler_prompt(tok: &GgufTokenizer, n: usize) -> Result<Vec<u32>> {
    let ids = tok.encode(FILLER)?;
    if ids.is_empty() {
        bail!("the filler text has no tokens");
    }
    Ok(ids.iter().copied().cycle().take(n).collect())
}

pub fn run(a: Args) -> Result<()> {
    let name = a.model.display().to_string();
    let file = GgufFile::open(&a.model).with_context(|| format!("loading {name}"))?;
    let tok = GgufTokenizer::from_gguf(&file).with_context(|| format!("tokenizer of {name}"))?;
    let weights = LlamaWeights::from_gguf(&file).with_context(|| format!("weights of {name}"))?;
    let rt = Runtime::new(0).context("opening the GPU")?;
    println!("device: {}", rt.info());
    let mut failures = Vec::new();
    let mut out = json!({ "device": rt.info().to_string(), "model": name });

    // 1. Golden prompts.
    let cases = parse_golden(&serde_json::from_str(GOLDEN)?)?;
    let longest = cases.iter().map(|c| c.prompt_ids.len()).max().unwrap_or(0);
    let ctx = longest + a.greedy_tokens.max(16) + 1;
    let w = GpuWeights::upload(&rt, &weights).context("uploading the weights to the GPU")?;
    let (mut gpu, kernels) = model(rt, w, a.db.as_deref(), 1, ctx, longest)?;
    out["golden_kernels"] = kernels;
    let mut cpu = CpuModel::new(&weights, ctx);
    println!("\n== golden prompts: GPU logits vs HF transformers (tol {:.0e}), GPU greedy ids vs CPU f32", a.tol);
    let mut golden = Vec::new();
    for case in &cases {
        let r = check_case(&mut gpu, &mut cpu, case, a.greedy_tokens)?;
        let ok = r.passed(a.tol);
        let mism = first_mismatch(&r.gpu_ids, &r.cpu_ids);
        println!(
            "{} {:>3} prompt tokens  logits rel err {:.2e} (CPU {:.1e})  {} greedy ids {}  fixture prefix {}  {:?}",
            if ok { "ok  " } else { "FAIL" },
            r.prompt_tokens,
            r.logit_rel_err,
            r.cpu_logit_rel_err,
            r.gpu_ids.len(),
            mism.map_or("identical to CPU".to_string(), |i| format!("differ from CPU at {i}")),
            if first_mismatch(&r.gpu_ids, &r.fixture_ids).is_none() { "ok" } else { "DIFFERS" },
            r.text.chars().take(40).collect::<String>(),
        );
        if !ok {
            failures.push(format!("golden prompt {:?}", r.text.chars().take(40).collect::<String>()));
            println!("     GPU {:?}\n     CPU {:?}", r.gpu_ids, r.cpu_ids);
        }
        golden.push(json!({
            "text": r.text, "prompt_tokens": r.prompt_tokens, "logit_rel_err": r.logit_rel_err,
            "cpu_logit_rel_err": r.cpu_logit_rel_err, "gpu_ids": r.gpu_ids, "cpu_ids": r.cpu_ids,
            "first_mismatch_vs_cpu": mism, "passed": ok,
        }));
    }
    out["golden"] = json!(golden);

    // 2. Chat.
    let question = "What is the capital of France?";
    let prompt = tok.encode(&tok.chat_prompt(question)?)?;
    let (rt, w) = gpu.into_parts();
    let (mut gpu, _) = model(rt, w, a.db.as_deref(), 1, prompt.len() + 32, prompt.len())?;
    let stats = generate(&mut gpu, &prompt, 24, &mut Sampler::greedy(), &tok.stop_ids, |_| {})?;
    let answer = tok.decode(&stats.generated)?;
    let paris = answer.contains("Paris");
    println!("\n== chat {question:?} → {answer:?} ({})", if paris { "mentions Paris" } else { "FAIL: no Paris" });
    if !paris {
        failures.push("chat answer without Paris".into());
    }
    out["chat"] = json!({ "question": question, "answer": answer, "mentions_paris": paris,
        "prefill_ms": stats.prefill.as_secs_f64() * 1e3, "decode_tokens_per_s": stats.decode_tokens_per_s() });

    // 3. Speed of the real model.
    let header = format!(
        "{:<22} {:>5} {:>8} {:>11} {:>9} {:>10} {:>9} {:>7}",
        "model", "batch", "context", "prefill ms", "ms/step", "tokens/s", "attn ms", "attn %"
    );
    println!("\n== decode speed (greedy steps incl. logits, argmax and the ids back on the host)\n{header}");
    let mut speed = Vec::new();
    let mut rows = Vec::new();
    let mut prompts = serde_json::Map::new();
    let (mut rt, mut w) = gpu.into_parts();
    for &context in &a.contexts {
        let Some(n) = context.checked_sub(WARMUP + a.steps).filter(|&n| n > 0) else {
            bail!("--contexts {context} leaves no room for a prompt before {} steps", WARMUP + a.steps);
        };
        let prompt = filler_prompt(&tok, n)?;
        prompts.insert(context.to_string(), json!(prompt));
        for &batch in &a.batches {
            let (mut m, kernels) = model(rt, w, a.db.as_deref(), batch, context, prompt.len())?;
            let s = decode_after_prefill(&mut m, &prompt, WARMUP, a.steps)?;
            let label = "SmolLM2-135M Q4_1→bf16";
            rows.push(speed_row(label, &s, context));
            println!("{}", rows.last().expect("pushed"));
            speed.push(speed_json(label, &s, context, kernels));
            (rt, w) = m.into_parts();
        }
    }
    drop(w);
    if let Some(p) = &a.prompts {
        std::fs::write(p, serde_json::to_string(&Value::Object(prompts))?)
            .with_context(|| format!("writing {}", p.display()))?;
    }

    // 4. Random Llama-3-8B shapes.
    if !a.no_llama && !a.llama_contexts.is_empty() {
        let config = LlamaConfig { n_layers: a.llama_layers, ..LlamaConfig::llama3_8b_shapes() };
        let t = std::time::Instant::now();
        let mut w = GpuWeights::random(&rt, &config, 42).context("random Llama-3-8B-shape weights on the GPU")?;
        let label = format!("Llama-3-8B-shape rnd {}L", config.n_layers);
        println!(
            "({label}: {:.1} GB of bf16 weights made on the GPU in {:.1} s)",
            w.bytes() as f64 / 1e9,
            t.elapsed().as_secs_f64()
        );
        for &context in &a.llama_contexts {
            let Some(len) = context.checked_sub(WARMUP + a.llama_steps).filter(|&n| n > 0) else {
                bail!("--llama-contexts {context} is shorter than {} steps", WARMUP + a.llama_steps);
            };
            // No prefill here (a random cache): the prefill choice is resolved at its length.
            let (mut m, kernels) = model(rt, w, a.db.as_deref(), 1, context, len)
                .with_context(|| format!("{label} at context {context}"))?;
            let s = decode_over_random_cache(&mut m, len, WARMUP, a.llama_steps, 7)?;
            rows.push(speed_row(&label, &s, context));
            println!("{}", rows.last().expect("pushed"));
            speed.push(speed_json(&label, &s, context, kernels));
            (rt, w) = m.into_parts();
        }
    }
    out["speed"] = json!(speed);
    out["failures"] = json!(failures);

    println!("\n== summary\n{header}");
    for r in &rows {
        println!("{r}");
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&out)?).with_context(|| format!("writing {}", p.display()))?;
    }
    if !failures.is_empty() {
        bail!("{} check(s) failed: {}", failures.len(), failures.join("; "));
    }
    println!("all checks passed");
    Ok(())
}
