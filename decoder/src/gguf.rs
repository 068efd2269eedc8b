//! A small GGUF (v2/v3) reader: metadata of every value type (arrays included), tensor
//! infos, data alignment, and dequantization of F32, F16, BF16, Q4_0, Q4_1 and Q8_0 to f32.
//!
//! Why our own parser and not `candle-core`'s `gguf_file` (../shared/research/deps.md §3):
//! candle is the only crate that also dequantizes, but a clean release build of it costs
//! about 1 m 45 s and 132 crates (gemm, zip, …) for a few hundred lines that we need; the
//! metadata-only crates (`gguf-rs`, `gguf`) either truncate arrays by default or are
//! unmaintained. This reader is bit-exact against Python `gguf.quants.dequantize` for the
//! types above, and every malformed input is a typed [`GgufError`], never a panic.
//!
//! Layout (all little-endian): magic `GGUF`, version u32, tensor count u64, metadata count
//! u64, metadata key/value pairs, tensor infos (name, n_dims u32, dims u64 in ggml `ne`
//! order — fastest first —, type u32, offset u64), padding to `general.alignment` (32 by
//! default), then the tensor data; each tensor's offset is relative to the start of the data.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use rayon::prelude::*;

/// What can go wrong reading a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("I/O error on {path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("not a GGUF file (magic bytes {0:02x?}, expected \"GGUF\")")]
    NotGguf([u8; 4]),
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("truncated GGUF file: {0}")]
    Truncated(String),
    #[error("malformed GGUF file: {0}")]
    Malformed(String),
    #[error("tensor `{name}` has type {ty}, which this decoder cannot dequantize (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0)")]
    UnsupportedTensorType { name: String, ty: GgmlType },
    #[error("unsupported architecture `{0}` (supported: llama)")]
    UnsupportedArchitecture(String),
    #[error("missing metadata key `{0}`")]
    MissingKey(String),
    #[error("metadata key `{key}` has type {found}, expected {expected}")]
    WrongType { key: String, expected: &'static str, found: &'static str },
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    WrongShape { name: String, expected: Vec<usize>, found: Vec<usize> },
}

pub type Result<T> = std::result::Result<T, GgufError>;

/// A ggml tensor type, as stored in a tensor info. Unknown ids are kept as [`GgmlType::Other`]
/// so that a file with exotic tensors still parses; only dequantization rejects them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    I8,
    I16,
    I32,
    I64,
    F64,
    BF16,
    Other(u32),
}

impl GgmlType {
    pub fn from_id(id: u32) -> Self {
        use GgmlType::*;
        match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2K,
            11 => Q3K,
            12 => Q4K,
            13 => Q5K,
            14 => Q6K,
            15 => Q8K,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            30 => BF16,
            other => Other(other),
        }
    }

    /// (elements per block, bytes per block), where known.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        use GgmlType::*;
        Some(match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2K => (256, 84),
            Q3K => (256, 110),
            Q4K => (256, 144),
            Q5K => (256, 176),
            Q6K => (256, 210),
            Q8K => (256, 292),
            Other(_) => return None,
        })
    }

    /// Whether [`dequantize`] handles this type.
    pub fn is_supported(self) -> bool {
        matches!(
            self,
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0
        )
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GgmlType::Other(id) => write!(f, "ggml type {id}"),
            GgmlType::Q2K => f.write_str("Q2_K"),
            GgmlType::Q3K => f.write_str("Q3_K"),
            GgmlType::Q4K => f.write_str("Q4_K"),
            GgmlType::Q5K => f.write_str("Q5_K"),
            GgmlType::Q6K => f.write_str("Q6_K"),
            GgmlType::Q8K => f.write_str("Q8_K"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::F32(_) => "f32",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F64(_) => "f64",
        }
    }

    /// Any integer value that fits in a u64.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any numeric value as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64).or(match *self {
                Value::I8(v) => Some(v.into()),
                Value::I16(v) => Some(v.into()),
                Value::I32(v) => Some(v.into()),
                Value::I64(v) => Some(v as f64),
                _ => None,
            }),
        }
    }
}

/// One tensor's description. `dims` is in ggml `ne` order (fastest-varying first), so a
/// 2-D weight with `dims = [in, out]` is stored row-major as `out` rows of `in` values.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row-major shape (ggml dims reversed), e.g. `[49152, 576]` for the token embedding.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Size in bytes, when the type's block layout is known and the count is whole blocks.
    pub fn n_bytes(&self) -> Result<u64> {
        let (block, bytes) = self
            .ty
            .block_layout()
            .ok_or_else(|| GgufError::UnsupportedTensorType { name: self.name.clone(), ty: self.ty })?;
        let n = self.n_elements();
        if !n.is_multiple_of(block as u64) {
            return Err(GgufError::Malformed(format!(
                "tensor `{}` has {n} elements, not a multiple of the {} block size {block}",
                self.name, self.ty
            )));
        }
        Ok(n / block as u64 * bytes as u64)
    }
}

enum Source {
    File { path: PathBuf, file: File },
    Bytes(Vec<u8>),
}

/// A parsed GGUF file: metadata and tensor infos in memory, tensor data read on demand.
pub struct GgufFile {
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    /// Metadata keys in file order.
    pub keys: Vec<String>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_start: u64,
    pub file_len: u64,
    source: Source,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Bounded little-endian reader: never allocates more than what is left in the file.
struct Reader<R> {
    inner: R,
    pos: u64,
    len: u64,
}

const MAX_ARRAY_DEPTH: u32 = 8;

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>> {
        if n > self.len.saturating_sub(self.pos) {
            return Err(GgufError::Truncated(format!(
                "{what} needs {n} bytes at offset {}, but the file has {} bytes",
                self.pos, self.len
            )));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner.read_exact(&mut buf).map_err(|e| GgufError::Truncated(format!("{what}: {e}")))?;
        self.pos += n;
        Ok(buf)
    }

    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let v = self.bytes(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    /// A count: u64 in v2/v3 (v1, with u32 counts, is rejected earlier).
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let b = self.bytes(n, what)?;
        String::from_utf8(b).map_err(|_| GgufError::Malformed(format!("{what} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(u8::from_le_bytes(self.arr(key)?)),
            1 => Value::I8(i8::from_le_bytes(self.arr(key)?)),
            2 => Value::U16(u16::from_le_bytes(self.arr(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.arr(key)?)),
            4 => Value::U32(u32::from_le_bytes(self.arr(key)?)),
            5 => Value::I32(i32::from_le_bytes(self.arr(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.arr(key)?)),
            7 => match self.arr::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(GgufError::Malformed(format!("`{key}`: bool byte {b}"))),
            },
            8 => Value::String(self.string(key)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::Malformed(format!("`{key}`: arrays nested too deep")));
                }
                let elem_ty = self.u32(key)?;
                let n = self.u64(key)?;
                // Every element takes at least one byte: a larger count cannot fit in the file.
                if n > self.len.saturating_sub(self.pos) {
                    return Err(GgufError::Truncated(format!("`{key}`: array of {n} elements does not fit")));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(elem_ty, key, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.arr(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.arr(key)?)),
            t => return Err(GgufError::Malformed(format!("`{key}`: unknown metadata value type {t}"))),
        })
    }
}

impl GgufFile {
    /// Opens and parses a GGUF file (metadata and tensor infos; no tensor data is read).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let reader = std::io::BufReader::with_capacity(1 << 20, file.try_clone().map_err(io)?);
        Self::parse(reader, len, Source::File { path, file })
    }

    /// Parses a GGUF image held in memory (tests, small files).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        let len = bytes.len() as u64;
        let copy = bytes.clone();
        Self::parse(&copy[..], len, Source::Bytes(bytes))
    }

    fn parse<R: Read>(inner: R, len: u64, source: Source) -> Result<Self> {
        let mut r = Reader { inner, pos: 0, len };
        let magic: [u8; 4] = if len < 4 {
            let mut m = [0u8; 4];
            let got = r.bytes(len, "magic")?;
            m[..got.len()].copy_from_slice(&got);
            return Err(GgufError::NotGguf(m));
        } else {
            r.arr("magic")?
        };
        if &magic != b"GGUF" {
            return Err(GgufError::NotGguf(magic));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        if n_kv > len || n_tensors > len {
            return Err(GgufError::Truncated(format!("{n_kv} metadata entries and {n_tensors} tensors cannot fit")));
        }
        let mut metadata = HashMap::new();
        let mut keys = Vec::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let ty = r.u32(&key)?;
            let v = r.value(ty, &key, 0)?;
            keys.push(key.clone());
            metadata.insert(key, v);
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::new();
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32(&name)?;
            if n_dims > 8 {
                return Err(GgufError::Malformed(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64(&name)?);
            }
            if dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).is_none() {
                return Err(GgufError::Malformed(format!("tensor `{name}` dims {dims:?} overflow")));
            }
            let ty = GgmlType::from_id(r.u32(&name)?);
            let offset = r.u64(&name)?;
            tensor_index.insert(name.clone(), tensors.len());
            tensors.push(TensorInfo { name, dims, ty, offset });
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => return Err(GgufError::Malformed(format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let data_start = r.pos.div_ceil(alignment) * alignment;
        let f =
            GgufFile { version, metadata, keys, tensors, tensor_index, alignment, data_start, file_len: len, source };
        for t in &f.tensors {
            if !t.offset.is_multiple_of(alignment) {
                return Err(GgufError::Malformed(format!("tensor `{}` offset {} is not aligned", t.name, t.offset)));
            }
            if let Ok(n) = t.n_bytes() {
                let end = data_start.checked_add(t.offset).and_then(|s| s.checked_add(n));
                if end.is_none_or(|e| e > len) {
                    return Err(GgufError::Truncated(format!(
                        "tensor `{}` ({} bytes at data offset {}) runs past the end of the file ({len} bytes)",
                        t.name, n, t.offset
                    )));
                }
            }
        }
        Ok(f)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key).ok_or_else(|| GgufError::MissingKey(key.into()))?;
        v.as_u64().ok_or_else(|| GgufError::WrongType { key: key.into(), expected: "integer", found: v.type_name() })
    }

    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key).ok_or_else(|| GgufError::MissingKey(key.into()))?;
        v.as_f64().ok_or_else(|| GgufError::WrongType { key: key.into(), expected: "number", found: v.type_name() })
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.get(key).ok_or_else(|| GgufError::MissingKey(key.into()))? {
            Value::String(s) => Ok(s),
            v => Err(GgufError::WrongType { key: key.into(), expected: "string", found: v.type_name() }),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        match self.get(key).ok_or_else(|| GgufError::MissingKey(key.into()))? {
            Value::Array(a) => Ok(a),
            v => Err(GgufError::WrongType { key: key.into(), expected: "array", found: v.type_name() }),
        }
    }

    /// A string array, e.g. `tokenizer.ggml.tokens`.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.get_array(key)?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                v => Err(GgufError::WrongType { key: key.into(), expected: "string array", found: v.type_name() }),
            })
            .collect()
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<Vec<u8>> {
        let n = info.n_bytes()?;
        let start = self.data_start + info.offset;
        match &self.source {
            Source::Bytes(b) => Ok(b[start as usize..(start + n) as usize].to_vec()),
            Source::File { path, file } => {
                let io = |source| GgufError::Io { path: path.clone(), source };
                let mut f = file;
                f.seek(SeekFrom::Start(start)).map_err(io)?;
                let mut buf = vec![0u8; n as usize];
                f.read_exact(&mut buf).map_err(|e| GgufError::Truncated(format!("tensor `{}`: {e}", info.name)))?;
                Ok(buf)
            }
        }
    }

    /// A tensor dequantized to f32, row-major (see [`TensorInfo::shape`]).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self.tensor_info(name).ok_or_else(|| GgufError::MissingTensor(name.into()))?;
        if !info.ty.is_supported() {
            return Err(GgufError::UnsupportedTensorType { name: name.into(), ty: info.ty });
        }
        let bytes = self.tensor_bytes(info)?;
        let data = dequantize(info.ty, &bytes, info.n_elements() as usize).map_err(|e| {
            if let GgufError::UnsupportedTensorType { ty, .. } = e {
                GgufError::UnsupportedTensorType { name: name.into(), ty }
            } else {
                e
            }
        })?;
        Ok((info.shape(), data))
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn dequant_block(ty: GgmlType, b: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::F32 => out[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => out[0] = f16_at(b, 0),
        GgmlType::BF16 => out[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::Q4_0 => {
            let d = f16_at(b, 0);
            for (j, &q) in b[2..18].iter().enumerate() {
                out[j] = ((q & 15) as i32 - 8) as f32 * d;
                out[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
            }
        }
        GgmlType::Q4_1 => {
            let d = f16_at(b, 0);
            let m = f16_at(b, 2);
            for (j, &q) in b[4..20].iter().enumerate() {
                out[j] = (q & 15) as f32 * d + m;
                out[j + 16] = (q >> 4) as f32 * d + m;
            }
        }
        GgmlType::Q8_0 => {
            let d = f16_at(b, 0);
            for (o, &q) in out.iter_mut().zip(&b[2..34]) {
                *o = q as i8 as f32 * d;
            }
        }
        _ => unreachable!("checked by dequantize"),
    }
}

/// Dequantizes `n` values of type `ty` from `bytes` to f32.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    if !ty.is_supported() {
        return Err(GgufError::UnsupportedTensorType { name: String::new(), ty });
    }
    let (block, block_bytes) = ty.block_layout().expect("supported types have a layout");
    if !n.is_multiple_of(block) {
        return Err(GgufError::Malformed(format!("{n} values of {ty} are not whole blocks of {block}")));
    }
    let need = n / block * block_bytes;
    if bytes.len() < need {
        return Err(GgufError::Truncated(format!("{n} values of {ty} need {need} bytes, got {}", bytes.len())));
    }
    let mut out = vec![0f32; n];
    // Chunks of many blocks per rayon task.
    const BLOCKS_PER_TASK: usize = 4096;
    out.par_chunks_mut(block * BLOCKS_PER_TASK).zip(bytes[..need].par_chunks(block_bytes * BLOCKS_PER_TASK)).for_each(
        |(o, b)| {
            for (ob, bb) in o.chunks_exact_mut(block).zip(b.chunks_exact(block_bytes)) {
                dequant_block(ty, bb, ob);
            }
        },
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_0_block() {
        let mut b = h(0.5).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let v = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(v[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(v[j + 16], ((15 - j) as f32 - 8.0) * 0.5);
        }
    }

    #[test]
    fn q4_1_block() {
        let mut b = h(0.25).to_vec();
        b.extend(h(-1.0));
        b.extend((0..16u8).map(|j| j | (((j + 3) % 16) << 4)));
        let v = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(v[j], j as f32 * 0.25 - 1.0);
            assert_eq!(v[j + 16], ((j + 3) % 16) as f32 * 0.25 - 1.0);
        }
    }

    #[test]
    fn q8_0_two_blocks() {
        let mut b = Vec::new();
        for d in [2.0f32, -0.125] {
            b.extend(h(d));
            b.extend((0..32).map(|j| (j as i8 - 16) as u8));
        }
        let v = dequantize(GgmlType::Q8_0, &b, 64).unwrap();
        for j in 0..32 {
            assert_eq!(v[j], (j as f32 - 16.0) * 2.0);
            assert_eq!(v[32 + j], (j as f32 - 16.0) * -0.125);
        }
    }

    #[test]
    fn float_types() {
        let xs = [1.5f32, -2.25, 0.0, 65504.0];
        let f32b: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(dequantize(GgmlType::F32, &f32b, 4).unwrap(), xs);
        let f16b: Vec<u8> = xs.iter().flat_map(|&x| h(x)).collect();
        assert_eq!(dequantize(GgmlType::F16, &f16b, 4).unwrap(), xs);
        let bf: Vec<u8> = [1.5f32, -2.25, 0.0, 3.0e38].iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect();
        let got = dequantize(GgmlType::BF16, &bf, 4).unwrap();
        assert_eq!(&got[..3], &[1.5, -2.25, 0.0]);
        assert!((got[3] / 3.0e38 - 1.0).abs() < 1e-2);
    }

    #[test]
    fn short_input_is_an_error() {
        assert!(matches!(dequantize(GgmlType::Q4_1, &[0u8; 19], 32), Err(GgufError::Truncated(_))));
        assert!(matches!(dequantize(GgmlType::Q4K, &[0u8; 144], 256), Err(GgufError::UnsupportedTensorType { .. })));
        assert!(matches!(dequantize(GgmlType::Q8_0, &[0u8; 34], 31), Err(GgufError::Malformed(_))));
    }

    /// A hand-built GGUF v3 image with one metadata entry of every type and two tensors.
    pub(crate) fn build_gguf(version: u32, tensors: &[(&str, Vec<u64>, u32, Vec<u8>)]) -> Vec<u8> {
        fn s(out: &mut Vec<u8>, x: &str) {
            out.extend((x.len() as u64).to_le_bytes());
            out.extend(x.as_bytes());
        }
        let mut b = b"GGUF".to_vec();
        b.extend(version.to_le_bytes());
        b.extend((tensors.len() as u64).to_le_bytes());
        let kvs: Vec<(&str, u32, Vec<u8>)> = vec![
            ("a.u8", 0, vec![7]),
            ("a.i8", 1, vec![0xff]),
            ("a.u16", 2, 513u16.to_le_bytes().to_vec()),
            ("a.i16", 3, (-2i16).to_le_bytes().to_vec()),
            ("a.u32", 4, 70000u32.to_le_bytes().to_vec()),
            ("a.i32", 5, (-3i32).to_le_bytes().to_vec()),
            ("a.f32", 6, 0.5f32.to_le_bytes().to_vec()),
            ("a.bool", 7, vec![1]),
            ("a.str", 8, {
                let mut v = Vec::new();
                s(&mut v, "héllo");
                v
            }),
            ("a.arr", 9, {
                let mut v = 8u32.to_le_bytes().to_vec();
                v.extend(2u64.to_le_bytes());
                s(&mut v, "x y");
                s(&mut v, "");
                v
            }),
            ("a.nested", 9, {
                let mut v = 9u32.to_le_bytes().to_vec();
                v.extend(1u64.to_le_bytes());
                v.extend(4u32.to_le_bytes());
                v.extend(2u64.to_le_bytes());
                v.extend(1u32.to_le_bytes());
                v.extend(2u32.to_le_bytes());
                v
            }),
            ("a.u64", 10, (1u64 << 40).to_le_bytes().to_vec()),
            ("a.i64", 11, (-5i64).to_le_bytes().to_vec()),
            ("a.f64", 12, 0.25f64.to_le_bytes().to_vec()),
        ];
        b.extend((kvs.len() as u64).to_le_bytes());
        for (k, t, v) in &kvs {
            s(&mut b, k);
            b.extend(t.to_le_bytes());
            b.extend(v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in tensors {
            s(&mut b, name);
            b.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(ty.to_le_bytes());
            b.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).div_ceil(32) * 32;
        }
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        let start = b.len();
        for ((_, _, _, data), off) in tensors.iter().zip(offsets) {
            b.resize(start + off as usize, 0);
            b.extend(data);
        }
        b
    }

    fn sample_tensors() -> Vec<(&'static str, Vec<u64>, u32, Vec<u8>)> {
        let mut q41 = h(1.0).to_vec();
        q41.extend(h(0.5));
        q41.extend([0x21u8; 16]);
        vec![
            ("w", vec![32, 1], 3, q41),
            ("n", vec![3], 0, [1.0f32, 2.0, 3.0].iter().flat_map(|x| x.to_le_bytes()).collect()),
        ]
    }

    #[test]
    fn parses_metadata_and_tensors() {
        let f = GgufFile::from_bytes(build_gguf(3, &sample_tensors())).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.keys.len(), 14);
        assert_eq!(f.get("a.u8"), Some(&Value::U8(7)));
        assert_eq!(f.get("a.i8"), Some(&Value::I8(-1)));
        assert_eq!(f.get("a.u16"), Some(&Value::U16(513)));
        assert_eq!(f.get("a.i16"), Some(&Value::I16(-2)));
        assert_eq!(f.get_u64("a.u32").unwrap(), 70000);
        assert_eq!(f.get("a.i32"), Some(&Value::I32(-3)));
        assert_eq!(f.get_f64("a.f32").unwrap(), 0.5);
        assert_eq!(f.get("a.bool"), Some(&Value::Bool(true)));
        assert_eq!(f.get_str("a.str").unwrap(), "héllo");
        assert_eq!(f.get_str_array("a.arr").unwrap(), vec!["x y", ""]);
        assert_eq!(f.get("a.nested"), Some(&Value::Array(vec![Value::Array(vec![Value::U32(1), Value::U32(2)])])));
        assert_eq!(f.get_u64("a.u64").unwrap(), 1 << 40);
        assert_eq!(f.get("a.i64"), Some(&Value::I64(-5)));
        assert_eq!(f.get_f64("a.f64").unwrap(), 0.25);
        assert!(matches!(f.get_str("a.u8"), Err(GgufError::WrongType { .. })));
        assert!(matches!(f.get_u64("nope"), Err(GgufError::MissingKey(_))));

        let (shape, w) = f.tensor_f32("w").unwrap();
        assert_eq!(shape, vec![1, 32]);
        assert_eq!(w[0], 1.0 * 1.0 + 0.5);
        assert_eq!(w[16], 2.0 * 1.0 + 0.5);
        assert_eq!(f.tensor_f32("n").unwrap().1, vec![1.0, 2.0, 3.0]);
        assert!(matches!(f.tensor_f32("zz"), Err(GgufError::MissingTensor(_))));
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        let good = build_gguf(3, &sample_tensors());
        assert!(matches!(GgufFile::from_bytes(b"PK\x03\x04rest".to_vec()), Err(GgufError::NotGguf(_))));
        assert!(matches!(GgufFile::from_bytes(b"GG".to_vec()), Err(GgufError::NotGguf(_))));
        assert!(matches!(GgufFile::from_bytes(build_gguf(1, &[])), Err(GgufError::UnsupportedVersion(1))));
        assert!(GgufFile::from_bytes(build_gguf(2, &[])).is_ok());
        // Every truncation point is a clean error.
        for cut in [8, 20, 30, 100, 300, good.len() - 1] {
            let r = GgufFile::from_bytes(good[..cut].to_vec());
            assert!(matches!(r, Err(GgufError::Truncated(_))), "cut {cut}: {r:?}");
        }
        // A huge array length is rejected before allocating.
        let mut bad = good.clone();
        let pos = bad.windows(5).position(|w| w == b"a.arr").unwrap() + 5 + 4 + 4;
        bad[pos..pos + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(GgufFile::from_bytes(bad), Err(GgufError::Truncated(_))));
        // An unsupported tensor type parses but does not dequantize.
        let f = GgufFile::from_bytes(build_gguf(3, &[("k", vec![256], 12, vec![0; 144])])).unwrap();
        let e = f.tensor_f32("k").unwrap_err();
        assert!(e.to_string().contains("Q4_K"), "{e}");
    }
}
