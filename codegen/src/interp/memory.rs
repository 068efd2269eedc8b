//! Kernel arguments bound to parameters, and tile loads, stores and atomics on them.

use half::{bf16, f16};

use super::elementwise::expand;
use super::error::InterpError;
use super::value::{from_f64, Elem, Tile};
use super::Arg;
use crate::host::{HostData, HostTensor, ScalarValue};
use crate::ir::{AtomicOp, Kernel, ParamKind};

/// One bound argument.
pub(crate) enum Slot<'a> {
    Read(&'a HostTensor),
    Write(&'a mut HostTensor),
    Scalar(ScalarValue),
}

impl Slot<'_> {
    pub fn tensor(&self) -> &HostTensor {
        match self {
            Slot::Read(t) => t,
            Slot::Write(t) => t,
            Slot::Scalar(_) => unreachable!("verifier: tensor parameter"),
        }
    }

    fn tensor_mut(&mut self) -> &mut HostTensor {
        match self {
            Slot::Write(t) => t,
            _ => unreachable!("checked at binding: writable parameter given Out"),
        }
    }
}

fn arg_kind(a: &Arg<'_>) -> &'static str {
    match a {
        Arg::In(_) => "a read-only tensor (In)",
        Arg::Out(_) => "a writable tensor (Out)",
        Arg::Scalar(_) => "a scalar",
    }
}

/// Checks every argument against its parameter and binds them.
///
/// A read-only parameter accepts `In` or `Out`; a writable one needs `Out`.
pub(crate) fn bind<'a>(kernel: &Kernel, args: &'a mut [Arg<'_>]) -> Result<Vec<Slot<'a>>, InterpError> {
    if args.len() != kernel.params.len() {
        return Err(InterpError::ArgCount {
            kernel: kernel.name.clone(),
            expected: kernel.params.len(),
            got: args.len(),
        });
    }
    let mut slots = Vec::with_capacity(args.len());
    for (p, a) in kernel.params.iter().zip(args.iter_mut()) {
        let param = p.name.clone();
        let got = arg_kind(a);
        let kind_err = |expected| InterpError::ArgKind { param: p.name.clone(), expected, got };
        match p.kind {
            ParamKind::Scalar { dtype } => {
                let Arg::Scalar(s) = a else { return Err(kind_err("a scalar")) };
                if s.dtype() != dtype {
                    return Err(InterpError::ArgDType { param, expected: dtype, got: s.dtype() });
                }
                slots.push(Slot::Scalar(*s));
            }
            ParamKind::Tensor { dtype, rank, writable } => {
                let t: &HostTensor = match &*a {
                    Arg::In(t) if !writable => t,
                    Arg::Out(t) => t,
                    Arg::In(_) => return Err(kind_err("a writable tensor (Out)")),
                    Arg::Scalar(_) => return Err(kind_err("a tensor")),
                };
                if t.dtype() != dtype {
                    return Err(InterpError::ArgDType { param, expected: dtype, got: t.dtype() });
                }
                if t.shape.len() != rank {
                    return Err(InterpError::ArgRank { param, expected: rank, shape: t.shape.clone() });
                }
                let len = t.as_bytes().len() / dtype.size_bytes();
                if len != t.numel() {
                    return Err(InterpError::ArgData { param, shape: t.shape.clone(), expected: t.numel(), got: len });
                }
                slots.push(match a {
                    Arg::In(t) => Slot::Read(t),
                    Arg::Out(t) => Slot::Write(t),
                    Arg::Scalar(_) => unreachable!(),
                });
            }
        }
    }
    Ok(slots)
}

fn read(t: &HostTensor, i: usize) -> Elem {
    match &t.data {
        HostData::F32(v) => Elem::F(v[i]),
        HostData::F16(v) => Elem::F(v[i].to_f32()),
        HostData::BF16(v) => Elem::F(v[i].to_f32()),
        HostData::I32(v) => Elem::I(v[i] as i64),
        HostData::U32(v) => Elem::I(v[i] as i64),
        HostData::I64(v) => Elem::I(v[i]),
    }
}

/// Writes an element already rounded to the tensor's dtype.
fn write(t: &mut HostTensor, i: usize, e: Elem) {
    match (&mut t.data, e) {
        (HostData::F32(v), Elem::F(x)) => v[i] = x,
        (HostData::F16(v), Elem::F(x)) => v[i] = f16::from_f32(x),
        (HostData::BF16(v), Elem::F(x)) => v[i] = bf16::from_f32(x),
        (HostData::I32(v), Elem::I(x)) => v[i] = x as i32,
        (HostData::U32(v), Elem::I(x)) => v[i] = x as u32,
        (HostData::I64(v), Elem::I(x)) => v[i] = x,
        _ => unreachable!("verifier: value dtype matches the tensor"),
    }
}

/// One evaluated index: the positions on one tensor dimension, and whether the dimension
/// is a tile axis (`Range`/`Gather`) or dropped (`At`).
pub(crate) struct Positions {
    pub pos: Vec<i64>,
    pub tile_axis: bool,
}

/// The tile shape addressed and, per tile element (row-major), its flat offset in the
/// tensor, or `None` when it is out of bounds on some dimension or masked off.
pub(crate) fn address(t: &HostTensor, index: &[Positions], mask: Option<&Tile>) -> (Vec<usize>, Vec<Option<usize>>) {
    let strides = t.strides();
    let shape: Vec<usize> = index.iter().filter(|p| p.tile_axis).map(|p| p.pos.len()).collect();
    let mut offs: Vec<Option<usize>> = vec![Some(0)];
    for (dim, p) in index.iter().enumerate() {
        let size = t.shape[dim] as i64;
        let cands: Vec<Option<usize>> =
            p.pos.iter().map(|&x| (0..size).contains(&x).then(|| (x * strides[dim]) as usize)).collect();
        let mut next = Vec::with_capacity(offs.len() * cands.len());
        for o in &offs {
            for c in &cands {
                next.push(o.zip(*c).map(|(a, b)| a + b));
            }
        }
        offs = next;
    }
    if let Some(m) = mask {
        let m = expand(m, &shape);
        for (o, &keep) in offs.iter_mut().zip(m.ints_ref()) {
            if keep == 0 {
                *o = None;
            }
        }
    }
    (shape, offs)
}

pub(crate) fn load(t: &HostTensor, index: &[Positions], mask: Option<&Tile>, other: f64) -> Tile {
    let dtype = t.dtype();
    let other = from_f64(dtype, other);
    let (shape, offs) = address(t, index, mask);
    let mut out = Tile::splat(dtype, shape, other);
    for (i, o) in offs.iter().enumerate() {
        if let Some(o) = o {
            match (&mut out.buf, read(t, *o)) {
                (super::value::Buf::F(v), Elem::F(x)) => v[i] = x,
                (super::value::Buf::I(v), Elem::I(x)) => v[i] = x,
                _ => unreachable!(),
            }
        }
    }
    out
}

/// Stores `value` (broadcast to the addressed shape). Elements addressed twice are written
/// in row-major tile order, so the last one wins.
pub(crate) fn store(slot: &mut Slot<'_>, index: &[Positions], value: &Tile, mask: Option<&Tile>) {
    let t = slot.tensor_mut();
    let (shape, offs) = address(t, index, mask);
    let v = expand(value, &shape);
    for (i, o) in offs.iter().enumerate() {
        if let Some(o) = o {
            write(t, *o, v.get(i));
        }
    }
}

/// Atomic read-modify-write of each addressed element, in row-major tile order.
pub(crate) fn atomic(slot: &mut Slot<'_>, op: AtomicOp, index: &[Positions], value: &Tile, mask: Option<&Tile>) {
    let t = slot.tensor_mut();
    let dtype = t.dtype();
    let (shape, offs) = address(t, index, mask);
    let v = expand(value, &shape);
    for (i, o) in offs.iter().enumerate() {
        let Some(o) = *o else { continue };
        let new = match (read(t, o), v.get(i), op) {
            (Elem::F(a), Elem::F(b), AtomicOp::Add) => Elem::F(a + b),
            (Elem::F(a), Elem::F(b), AtomicOp::Max) => Elem::F(a.max(b)),
            (Elem::I(a), Elem::I(b), AtomicOp::Add) => Elem::I(super::value::wrap_i(dtype, a.wrapping_add(b))),
            (Elem::I(a), Elem::I(b), AtomicOp::Max) => Elem::I(a.max(b)),
            _ => unreachable!(),
        };
        write(t, o, new);
    }
}
