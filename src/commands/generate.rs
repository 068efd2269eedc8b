//! `tessera generate`: loads a model (a GGUF file, or a Hugging Face safetensors checkpoint:
//! a folder or a `.safetensors` file with `config.json` beside it), tokenizes the prompt and
//! streams generated text.
//! `--device cpu` runs the f32 reference of tessera-decoder; `--device cuda` the GPU path
//! (bf16 weights, cuBLAS linears, Tessera kernels; greedy on the GPU, top-p on the host),
//! its attention configured through the tuning database
//! ([`tessera::dispatch::decoder_choices`]).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tessera::dispatch::decoder_choices;
use tessera_decoder::gpu::{GpuModel, GpuWeights};
use tessera_decoder::{
    detect_model_format, generate, CpuModel, Decoder, GgufFile, GgufTokenizer, HfCheckpoint, LlamaConfig, LlamaWeights,
    ModelFormat, Sampler,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model: a GGUF file (llama architecture; F32/F16/BF16/Q4_0/Q4_1/Q8_0 tensors), or a
    /// Hugging Face checkpoint (Llama/Mistral; F32/F16/BF16 safetensors): its folder
    /// (config.json, tokenizer.json, model*.safetensors) or a .safetensors file in it.
    #[arg(long)]
    model: PathBuf,
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// Wrap the prompt in the model's chat template (with its default system prompt).
    #[arg(long)]
    chat: bool,
    /// The prompt text.
    #[arg(long, required_unless_present = "prompt_file", conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling threshold (with --temperature > 0).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// KV-cache length in tokens (prompt + generated); defaults to the model's context length.
    #[arg(long)]
    context: Option<usize>,
    /// Tuning database the GPU path takes its attention configurations from (`--device
    /// cuda`; default `TESSERA_DB`, else the SQLite file in the cache folder). Untuned
    /// shapes run the decoder's heuristics; `RUST_LOG=info` shows what was chosen.
    #[arg(long)]
    db: Option<String>,
}

pub fn run(a: Args) -> Result<()> {
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1], got {}", a.top_p);
    }
    if !(a.temperature >= 0.0 && a.temperature.is_finite()) {
        bail!("--temperature must be a finite number ≥ 0, got {}", a.temperature);
    }
    let text = match (&a.prompt, &a.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading the prompt file {}", f.display()))?
        }
        (None, None) => bail!("give --prompt or --prompt-file"),
    };

    let t = Instant::now();
    let name = a.model.display();
    enum Source {
        Gguf(GgufFile),
        Hf(HfCheckpoint),
    }
    // Configuration, tokenizer and prompt first: bad input fails before the weights load.
    let (source, config, tokenizer) = match detect_model_format(&a.model)? {
        ModelFormat::Gguf => {
            let file = GgufFile::open(&a.model).with_context(|| format!("loading {name}"))?;
            let config = LlamaConfig::from_gguf(&file).with_context(|| format!("model {name}"))?;
            let tokenizer = GgufTokenizer::from_gguf(&file).with_context(|| format!("tokenizer of {name}"))?;
            (Source::Gguf(file), config, tokenizer)
        }
        ModelFormat::Safetensors => {
            let ck = HfCheckpoint::open(&a.model).with_context(|| format!("loading {name}"))?;
            let tokenizer =
                GgufTokenizer::from_hf_dir(&ck.dir, &ck.config_json).with_context(|| format!("tokenizer of {name}"))?;
            let config = ck.config.clone();
            (Source::Hf(ck), config, tokenizer)
        }
    };
    let prompt_text = match (&tokenizer.chat, &tokenizer.chat_note) {
        (None, Some(note)) if a.chat => {
            eprintln!("note: --chat ignored, {note}: the prompt is used as it is");
            text
        }
        _ if a.chat => tokenizer.chat_prompt(&text)?,
        _ => text,
    };
    let prompt = tokenizer.encode(&prompt_text)?;
    let context = a.context.unwrap_or(config.max_context);
    if context == 0 {
        bail!("--context must be at least 1");
    }
    if let Some(w) = config.sliding_window.filter(|&w| context > w) {
        bail!(
            "the model uses sliding-window attention over {w} positions, which the decoder does not implement: \
             use --context {w} or less"
        );
    }
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    if prompt.len() > context {
        bail!("the prompt has {} tokens, more than the context of {context} tokens", prompt.len());
    }
    let weights = match &source {
        Source::Gguf(file) => LlamaWeights::from_gguf(file).with_context(|| format!("weights of {name}"))?,
        Source::Hf(ck) => LlamaWeights::from_hf(ck).with_context(|| format!("weights of {name}"))?,
    };
    let load = t.elapsed();
    let c = &weights.config;
    let t = Instant::now();
    let mut gpu;
    let mut cpu;
    let model: &mut dyn Decoder = match a.device {
        Device::Cpu => {
            cpu = CpuModel::new(&weights, context);
            &mut cpu
        }
        Device::Cuda => {
            let rt = tessera_runtime::Runtime::new(0).context("opening the GPU (--device cuda)")?;
            // Attention configurations from the tuning database, at this run's cache and prompt.
            let chosen = decoder_choices(&rt, a.db.as_deref(), &weights.config, 1, context, prompt.len());
            let w = GpuWeights::upload(&rt, &weights).context("uploading the weights to the GPU")?;
            gpu =
                GpuModel::with_choices(rt, w, 1, context, chosen.choices).context("setting up the model on the GPU")?;
            &mut gpu
        }
    };
    let where_ = match a.device {
        Device::Cpu => "f32 on the CPU".to_string(),
        Device::Cuda => format!("bf16 on the GPU, set up in {:.2} s", t.elapsed().as_secs_f64()),
    };
    eprintln!(
        "loaded {name} in {:.2} s: {} layers, hidden {}, {} q / {} kv heads × {}, vocab {}, {:.1} M params ({where_})",
        load.as_secs_f64(),
        c.n_layers,
        c.hidden,
        c.n_heads,
        c.n_kv_heads,
        c.head_dim,
        c.vocab,
        c.n_params() as f64 / 1e6
    );

    let mut sampler = Sampler::new(a.temperature, a.top_p, a.seed);
    let mut stream = tokenizer.stream();
    let mut out = std::io::stdout().lock();
    let mut err = None;
    let stats =
        generate(model, &prompt, a.max_new_tokens, &mut sampler, &tokenizer.stop_ids, |id| match stream.push(id) {
            Ok(Some(s)) => {
                let _ = out.write_all(s.as_bytes());
                let _ = out.flush();
            }
            Ok(None) => {}
            Err(e) => err = Some(e),
        })?;
    if let Some(e) = err {
        return Err(e.into());
    }
    writeln!(out)?;
    writeln!(
        out,
        "prompt tokens: {}, prefill: {:.1} ms, decode: {} tokens at {:.1} tokens/s",
        stats.prompt_tokens,
        stats.prefill.as_secs_f64() * 1e3,
        stats.generated.len(),
        stats.decode_tokens_per_s()
    )?;
    Ok(())
}
