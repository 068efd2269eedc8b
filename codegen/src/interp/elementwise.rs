//! Element-wise ops: broadcasting, unary and binary operators, select and cast.

use std::borrow::Cow;

use super::error::Fault;
use super::value::{cast_elem, round_f, wrap_i, Buf, Elem, Tile};
use crate::host::contiguous_strides;
use crate::ir::{broadcast_shapes, BinaryOp, DType, UnaryOp};

/// For each element of `out` (row-major), the flat index of the element of a tile of
/// shape `src` it reads under NumPy broadcasting.
pub(crate) fn bcast_map(src: &[usize], out: &[usize]) -> Vec<usize> {
    let n: usize = out.iter().product();
    let rank = out.len();
    let off = rank - src.len();
    let src_strides = contiguous_strides(src);
    let mut strides = vec![0usize; rank];
    for (i, &d) in src.iter().enumerate() {
        if d != 1 {
            strides[off + i] = src_strides[i] as usize;
        }
    }
    let mut map = Vec::with_capacity(n);
    let mut idx = vec![0usize; rank];
    let mut flat = 0usize;
    for _ in 0..n {
        map.push(flat);
        // Increment the multi-index, innermost axis first.
        for ax in (0..rank).rev() {
            idx[ax] += 1;
            flat += strides[ax];
            if idx[ax] < out[ax] {
                break;
            }
            flat -= strides[ax] * idx[ax];
            idx[ax] = 0;
        }
    }
    map
}

fn take<T: Copy>(v: &[T], map: &[usize]) -> Vec<T> {
    map.iter().map(|&i| v[i]).collect()
}

/// `t` broadcast to `shape` (borrowed when the shape already matches).
pub(crate) fn expand<'t>(t: &'t Tile, shape: &[usize]) -> Cow<'t, Tile> {
    if t.shape == shape {
        return Cow::Borrowed(t);
    }
    let map = bcast_map(&t.shape, shape);
    let buf = match &t.buf {
        Buf::F(v) => Buf::F(take(v, &map)),
        Buf::I(v) => Buf::I(take(v, &map)),
    };
    Cow::Owned(Tile { dtype: t.dtype, shape: shape.to_vec(), buf })
}

pub(crate) fn unary(op: UnaryOp, t: &Tile) -> Tile {
    let d = t.dtype;
    match &t.buf {
        Buf::F(v) => {
            let f: fn(f32) -> f32 = match op {
                UnaryOp::Neg => |x| -x,
                UnaryOp::Abs => f32::abs,
                UnaryOp::Exp2 => f32::exp2,
                UnaryOp::Log2 => f32::log2,
                UnaryOp::Exp => f32::exp,
                UnaryOp::Sqrt => f32::sqrt,
                UnaryOp::Rsqrt => |x| 1.0 / x.sqrt(),
                UnaryOp::Not => unreachable!("verifier: not on a float"),
            };
            Tile::floats(d, t.shape.clone(), v.iter().map(|&x| round_f(d, f(x))).collect())
        }
        Buf::I(v) => {
            let f = |x: i64| -> i64 {
                match (op, d) {
                    (UnaryOp::Not, DType::Bool) => 1 - x,
                    (UnaryOp::Not, _) => !x,
                    (UnaryOp::Neg, _) => x.wrapping_neg(),
                    (UnaryOp::Abs, DType::I32) => (x as i32).wrapping_abs() as i64,
                    (UnaryOp::Abs, DType::U32) => x,
                    (UnaryOp::Abs, _) => x.wrapping_abs(),
                    _ => unreachable!("verifier: {op:?} on {d}"),
                }
            };
            Tile::ints(d, t.shape.clone(), v.iter().map(|&x| wrap_i(d, f(x))).collect())
        }
    }
}

fn float_bin(op: BinaryOp, a: f32, b: f32) -> f32 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        // fmaxf/fminf: a NaN operand gives the other one.
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        _ => unreachable!("verifier: {op:?} on floats"),
    }
}

fn compare<T: PartialOrd>(op: BinaryOp, a: T, b: T) -> bool {
    match op {
        BinaryOp::Lt => a < b,
        BinaryOp::Le => a <= b,
        BinaryOp::Gt => a > b,
        BinaryOp::Ge => a >= b,
        BinaryOp::Eq => a == b,
        BinaryOp::Ne => a != b,
        _ => unreachable!(),
    }
}

macro_rules! int_bin_as {
    ($t:ty, $op:expr, $a:expr, $b:expr) => {{
        let (a, b) = ($a as $t, $b as $t);
        let bits = <$t>::BITS;
        let r: $t = match $op {
            BinaryOp::Add => a.wrapping_add(b),
            BinaryOp::Sub => a.wrapping_sub(b),
            BinaryOp::Mul => a.wrapping_mul(b),
            BinaryOp::Div if b == 0 => return Err(Fault::DivisionByZero("div")),
            BinaryOp::Div => a.wrapping_div(b),
            BinaryOp::Rem if b == 0 => return Err(Fault::DivisionByZero("rem")),
            BinaryOp::Rem => a.wrapping_rem(b),
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
            BinaryOp::And => a & b,
            BinaryOp::Or => a | b,
            // Shift amounts are taken modulo the bit width (`a << (b & 31)` in CUDA).
            BinaryOp::Shl => a.wrapping_shl(($b as u32) % bits),
            BinaryOp::Shr => a.wrapping_shr(($b as u32) % bits),
            _ => unreachable!(),
        };
        Ok(r as i64)
    }};
}

fn int_bin(op: BinaryOp, d: DType, a: i64, b: i64) -> Result<i64, Fault> {
    match d {
        DType::I32 => int_bin_as!(i32, op, a, b),
        DType::U32 => int_bin_as!(u32, op, a, b),
        DType::I64 => int_bin_as!(i64, op, a, b),
        DType::Bool => match op {
            BinaryOp::And => Ok(a & b),
            BinaryOp::Or => Ok(a | b),
            _ => unreachable!("verifier: {op:?} on bool"),
        },
        _ => unreachable!(),
    }
}

pub(crate) fn binary(op: BinaryOp, a: &Tile, b: &Tile) -> Result<Tile, Fault> {
    let shape = broadcast_shapes(&a.shape, &b.shape).expect("verifier: shapes broadcast");
    let (ea, eb) = (expand(a, &shape), expand(b, &shape));
    let d = a.dtype;
    Ok(match (&ea.buf, &eb.buf) {
        (Buf::F(x), Buf::F(y)) => {
            if op.is_comparison() {
                let v = x.iter().zip(y).map(|(&p, &q)| compare(op, p, q) as i64).collect();
                Tile::ints(DType::Bool, shape, v)
            } else {
                let v = x.iter().zip(y).map(|(&p, &q)| round_f(d, float_bin(op, p, q))).collect();
                Tile::floats(d, shape, v)
            }
        }
        (Buf::I(x), Buf::I(y)) => {
            if op.is_comparison() {
                let v = x.iter().zip(y).map(|(&p, &q)| compare(op, p, q) as i64).collect();
                Tile::ints(DType::Bool, shape, v)
            } else {
                let v = x.iter().zip(y).map(|(&p, &q)| int_bin(op, d, p, q)).collect::<Result<_, _>>()?;
                Tile::ints(d, shape, v)
            }
        }
        _ => unreachable!("verifier: operands share a dtype"),
    })
}

pub(crate) fn select(cond: &Tile, on_true: &Tile, on_false: &Tile) -> Tile {
    let shape = broadcast_shapes(&on_true.shape, &on_false.shape)
        .and_then(|s| broadcast_shapes(&s, &cond.shape))
        .expect("verifier: select shapes broadcast");
    let c = expand(cond, &shape);
    let c = c.ints_ref();
    let (t, f) = (expand(on_true, &shape), expand(on_false, &shape));
    let buf = match (&t.buf, &f.buf) {
        (Buf::F(t), Buf::F(f)) => {
            Buf::F(c.iter().zip(t.iter().zip(f)).map(|(&c, (&t, &f))| if c != 0 { t } else { f }).collect())
        }
        (Buf::I(t), Buf::I(f)) => {
            Buf::I(c.iter().zip(t.iter().zip(f)).map(|(&c, (&t, &f))| if c != 0 { t } else { f }).collect())
        }
        _ => unreachable!("verifier: branches share a dtype"),
    };
    Tile { dtype: on_true.dtype, shape, buf }
}

pub(crate) fn cast(t: &Tile, to: DType) -> Tile {
    let mut f = Vec::new();
    let mut i = Vec::new();
    for k in 0..t.numel() {
        match cast_elem(t.get(k), to) {
            Elem::F(x) => f.push(x),
            Elem::I(x) => i.push(x),
        }
    }
    if to.is_float() {
        Tile::floats(to, t.shape.clone(), f)
    } else {
        Tile::ints(to, t.shape.clone(), i)
    }
}
