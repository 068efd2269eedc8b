//! The tokenizer of a GGUF file, built from its own vocabulary and merges with the
//! `tokenizers` crate (no download features), and its ChatML chat template. The same type
//! also loads a Hugging Face checkpoint's `tokenizer.json` ([`GgufTokenizer::from_hf_dir`]).
//!
//! For `tokenizer.ggml.model = gpt2` with `tokenizer.ggml.pre = smollm` (SmolLM2) the recipe
//! is (../shared/research/deps.md §3): a BPE model from `tokenizer.ggml.tokens` and
//! `tokenizer.ggml.merges`; the pre-tokenizer `Sequence[Digits(individual), ByteLevel(no
//! prefix space, trim offsets, GPT-2 regex)]`, equivalent to llama.cpp's `smollm` regexes;
//! a ByteLevel decoder; the CONTROL tokens (`token_type == 3`) as special tokens. candle's
//! GGUF tokenizer does not know `smollm` and falls back to a prefix-space ByteLevel, which
//! gives wrong ids ("Hello world" → 38699 … instead of 19556 905): it is not used.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use std::path::Path;

use crate::gguf::{GgufError, GgufFile, Value};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),
    #[error("tokenizer error: {0}")]
    Tokenizers(String),
    #[error("{path}: {reason}")]
    File { path: std::path::PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, TokenizerError>;

fn tk_err(e: tokenizers::Error) -> TokenizerError {
    TokenizerError::Tokenizers(e.to_string())
}

/// llama.cpp's token type for control tokens.
const TOKEN_TYPE_CONTROL: i64 = 3;

/// A ChatML chat template (`<|im_start|>role\ncontent<|im_end|>\n`), as used by SmolLM2,
/// with the default system prompt the template inserts when the conversation has none.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatTemplate {
    pub default_system: Option<String>,
}

impl ChatTemplate {
    /// Recognises a ChatML Jinja template and extracts its default system prompt. Only
    /// this family is supported (no Jinja engine): anything else is an error.
    pub fn from_jinja(template: &str) -> Result<Self> {
        let chatml = ["<|im_start|>", "<|im_end|>", "message['role']", "message['content']", "add_generation_prompt"];
        if !chatml.iter().all(|p| template.contains(p)) {
            return Err(TokenizerError::Unsupported("the chat template is not ChatML".into()));
        }
        let default_system = template.find("<|im_start|>system").and_then(|i| {
            let rest = &template[i + "<|im_start|>system".len()..];
            let rest = rest.strip_prefix('\n').or_else(|| rest.strip_prefix("\\n"))?;
            let end = rest.find("<|im_end|>")?;
            Some(rest[..end].replace("\\n", "\n"))
        });
        Ok(ChatTemplate { default_system })
    }

    /// Renders a conversation like the Jinja template does; `messages` are (role, content).
    pub fn render(&self, messages: &[(&str, &str)], add_generation_prompt: bool) -> String {
        let mut s = String::new();
        if let Some(sys) = &self.default_system {
            if messages.first().is_none_or(|(role, _)| *role != "system") {
                s += &format!("<|im_start|>system\n{sys}<|im_end|>\n");
            }
        }
        for (role, content) in messages {
            s += &format!("<|im_start|>{role}\n{content}<|im_end|>\n");
        }
        if add_generation_prompt {
            s += "<|im_start|>assistant\n";
        }
        s
    }
}

/// A tokenizer with its special ids and chat template: from a GGUF file's vocabulary
/// ([`GgufTokenizer::from_gguf`]) or a Hugging Face `tokenizer.json`
/// ([`GgufTokenizer::from_hf_dir`]).
pub struct GgufTokenizer {
    pub inner: Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Ids that end generation: eos and `<|im_end|>` / `<|endoftext|>` when present.
    pub stop_ids: Vec<u32>,
    pub chat: Option<ChatTemplate>,
    pub add_bos: bool,
    /// Run the tokenizer's post-processor on encode (HF `tokenizer.json`: it adds the BOS
    /// where the checkpoint's tokenizer does, like `tokenizer(text)` in Python).
    pub add_special_tokens: bool,
    /// Why [`GgufTokenizer::chat`] is `None` when the model has a template we do not render.
    pub chat_note: Option<String>,
}

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizer").field("vocab", &self.vocab_size()).field("stop_ids", &self.stop_ids).finish()
    }
}

impl GgufTokenizer {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let model = f.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(TokenizerError::Unsupported(format!("tokenizer.ggml.model = {model} (supported: gpt2)")));
        }
        let pre = f.get_str("tokenizer.ggml.pre").unwrap_or("default");
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            "gpt2" | "default" => byte_level.into(),
            other => {
                return Err(TokenizerError::Unsupported(format!(
                    "tokenizer.ggml.pre = {other} (supported: smollm, gpt2)"
                )))
            }
        };
        let tokens = f.get_str_array("tokenizer.ggml.tokens")?;
        let merges = f.get_str_array("tokenizer.ggml.merges")?;
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| TokenizerError::Unsupported(format!("merge `{m}` has no space")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tk_err)?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        let types: Vec<i64> = match f.get("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::I32(x) => Ok(*x as i64),
                    v => v.as_u64().map(|x| x as i64).ok_or(()),
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| TokenizerError::Unsupported("tokenizer.ggml.token_type is not integers".into()))?,
            _ => vec![],
        };
        let special: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|&(_, &t)| t == TOKEN_TYPE_CONTROL)
            .map(|(i, _)| AddedToken::from(tokens[i].to_string(), true))
            .collect();
        inner.add_special_tokens(special).map_err(tk_err)?;

        let id = |k: &str| f.get_u64(k).ok().map(|v| v as u32);
        let bos = id("tokenizer.ggml.bos_token_id");
        let eos = id("tokenizer.ggml.eos_token_id");
        let mut stop_ids: Vec<u32> = eos.into_iter().collect();
        for t in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"] {
            if let Some(i) = inner.token_to_id(t) {
                if !stop_ids.contains(&i) {
                    stop_ids.push(i);
                }
            }
        }
        let chat = match f.get_str("tokenizer.chat_template") {
            Ok(t) => Some(ChatTemplate::from_jinja(t)?),
            Err(_) => None,
        };
        let add_bos = matches!(f.get("tokenizer.ggml.add_bos_token"), Some(Value::Bool(true)));
        Ok(GgufTokenizer { inner, bos, eos, stop_ids, chat, add_bos, add_special_tokens: false, chat_note: None })
    }

    /// The tokenizer of a Hugging Face checkpoint folder: `tokenizer.json` (required), and
    /// from `tokenizer_config.json` (optional) the BOS/EOS tokens and the chat template —
    /// used when it is ChatML, otherwise [`GgufTokenizer::chat`] is `None` and
    /// [`GgufTokenizer::chat_note`] says why. `config` (the checkpoint's `config.json`)
    /// adds its `eos_token_id`(s) to the stop ids.
    pub fn from_hf_dir(dir: &Path, config: &serde_json::Value) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(TokenizerError::File {
                path,
                reason: "not found (the checkpoint's tokenizer is needed)".into(),
            });
        }
        let inner = Tokenizer::from_file(&path)
            .map_err(|e| TokenizerError::File { path: path.clone(), reason: e.to_string() })?;
        let tc_path = dir.join("tokenizer_config.json");
        let tc: serde_json::Value = match std::fs::read_to_string(&tc_path) {
            Ok(t) => serde_json::from_str(&t)
                .map_err(|e| TokenizerError::File { path: tc_path.clone(), reason: e.to_string() })?,
            Err(_) => serde_json::Value::Null,
        };
        // A special token is a string or {"content": string}.
        let token_id = |k: &str| {
            let v = tc.get(k)?;
            let s = v.as_str().or_else(|| v.get("content").and_then(|c| c.as_str()))?;
            inner.token_to_id(s)
        };
        let bos = token_id("bos_token");
        let eos = token_id("eos_token");
        let mut stop_ids: Vec<u32> = eos.into_iter().collect();
        let mut add_stop = |i: u32| {
            if !stop_ids.contains(&i) {
                stop_ids.push(i);
            }
        };
        match config.get("eos_token_id") {
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_u64()).for_each(|i| add_stop(i as u32)),
            Some(v) => v.as_u64().into_iter().for_each(|i| add_stop(i as u32)),
            None => {}
        }
        for t in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"] {
            if let Some(i) = inner.token_to_id(t) {
                add_stop(i);
            }
        }
        // `chat_template` is a string, or a list of {name, template} (pick "default").
        let template = match tc.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(String::from)),
            _ => None,
        };
        let (chat, chat_note) = match template {
            None => (None, Some("the checkpoint has no chat template (tokenizer_config.json)".to_string())),
            Some(t) => match ChatTemplate::from_jinja(&t) {
                Ok(c) => (Some(c), None),
                Err(_) => {
                    (None, Some("the checkpoint's chat template is not ChatML, the only one rendered here".to_string()))
                }
            },
        };
        Ok(GgufTokenizer { inner, bos, eos, stop_ids, chat, add_bos: false, add_special_tokens: true, chat_note })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) are matched.
    /// A BOS is prepended only when the file asks for it (`add_bos_token`), or by the
    /// post-processor of a `tokenizer.json` ([`GgufTokenizer::add_special_tokens`]).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, self.add_special_tokens).map_err(tk_err)?;
        let mut ids = Vec::with_capacity(enc.get_ids().len() + 1);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tk_err)
    }

    /// The chat prompt for one user message, rendered with the file's template.
    pub fn chat_prompt(&self, user: &str) -> Result<String> {
        let t = self.chat.as_ref().ok_or_else(|| {
            TokenizerError::Unsupported(
                self.chat_note.clone().unwrap_or_else(|| "the model has no chat template".into()),
            )
        })?;
        Ok(t.render(&[("user", user)], true))
    }

    /// A streaming decoder that yields text as soon as it is complete UTF-8.
    pub fn stream(&self) -> TokenStream<'_> {
        TokenStream { tok: self, ids: Vec::new(), printed: 0 }
    }
}

/// Incremental detokenizer: pushes ids, returns the new text once it is complete UTF-8
/// (byte-level tokens can split a character).
pub struct TokenStream<'a> {
    tok: &'a GgufTokenizer,
    ids: Vec<u32>,
    printed: usize,
}

impl TokenStream<'_> {
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() <= self.printed || !text.is_char_boundary(self.printed) {
            return Ok(None);
        }
        let new = text[self.printed..].to_string();
        self.printed = text.len();
        Ok(Some(new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_template() {
        let t = ChatTemplate::from_jinja(SMOLLM2_TEMPLATE).unwrap();
        assert_eq!(
            t.default_system.as_deref(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
        assert_eq!(
            t.render(&[("user", "Hi")], true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&[("system", "S"), ("user", "Hi")], false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
        // Escaped newlines in the Jinja literal work too.
        let escaped = SMOLLM2_TEMPLATE.replace('\n', "\\n");
        assert_eq!(ChatTemplate::from_jinja(&escaped).unwrap(), t);
        assert!(ChatTemplate::from_jinja("{{ bos_token }}[INST] {{ message }}").is_err());
    }
}
