//! The statement walker: runs one program instance over the statement tree.

use super::elementwise::{binary, cast, expand, select, unary};
use super::error::InterpError;
use super::memory::{atomic, load, store, Positions, Slot};
use super::tile_ops::{cumsum, dot, reduce, topk};
use super::value::{from_f64, Elem, Tile};
use crate::host::ScalarValue;
use crate::ir::{DType, Index, Kernel, Op, Stmt, ValueId};

/// Whether a block ran to its end or hit `Return`.
enum Flow {
    Next,
    Return,
}

/// The state of the machine while it runs the program instances of one launch.
pub(crate) struct Machine<'k, 'a> {
    kernel: &'k Kernel,
    slots: Vec<Slot<'a>>,
    values: Vec<Option<Tile>>,
    grid: [u32; 3],
    program: [u32; 3],
}

impl<'k, 'a> Machine<'k, 'a> {
    pub fn new(kernel: &'k Kernel, slots: Vec<Slot<'a>>, grid: [u32; 3]) -> Self {
        Machine { kernel, slots, values: vec![None; kernel.values.len()], grid, program: [0; 3] }
    }

    /// Runs program instance `program` to its end or its `Return`.
    pub fn run_program(&mut self, program: [u32; 3]) -> Result<(), InterpError> {
        self.program = program;
        self.values.iter_mut().for_each(|v| *v = None);
        self.block(&self.kernel.body).map(|_| ())
    }

    fn val(&self, v: ValueId) -> &Tile {
        self.values[v.0 as usize].as_ref().expect("verifier: value defined before use")
    }

    fn set(&mut self, v: ValueId, t: Tile) {
        debug_assert_eq!(t.shape, self.kernel.ty(v).shape, "shape of %{}", v.0);
        debug_assert_eq!(t.dtype, self.kernel.ty(v).dtype, "dtype of %{}", v.0);
        self.values[v.0 as usize] = Some(t);
    }

    fn block(&mut self, body: &'k [Stmt]) -> Result<Flow, InterpError> {
        for s in body {
            if let Flow::Return = self.stmt(s)? {
                return Ok(Flow::Return);
            }
        }
        Ok(Flow::Next)
    }

    fn positions(&self, index: &[Index]) -> Vec<Positions> {
        index
            .iter()
            .map(|i| match i {
                Index::At(v) => Positions { pos: vec![self.val(*v).as_i64()], tile_axis: false },
                Index::Range { start, len } => {
                    let s = self.val(*start).as_i64();
                    Positions { pos: (0..*len as i64).map(|j| s + j).collect(), tile_axis: true }
                }
                Index::Gather(v) => Positions { pos: self.val(*v).ints_ref().to_vec(), tile_axis: true },
            })
            .collect()
    }

    fn stmt(&mut self, s: &'k Stmt) -> Result<Flow, InterpError> {
        match s {
            Stmt::Let { results, op } => {
                let tiles = self.op(op)?;
                for (r, t) in results.iter().zip(tiles) {
                    self.set(*r, t);
                }
            }
            Stmt::Assign { var, value } => {
                let t = self.val(*value).clone();
                self.set(*var, t);
            }
            Stmt::Store { tensor, index, value, mask } => {
                let pos = self.positions(index);
                let (value, mask) = (self.val(*value).clone(), mask.map(|m| self.val(m).clone()));
                store(&mut self.slots[tensor.0 as usize], &pos, &value, mask.as_ref());
            }
            Stmt::Atomic { op, tensor, index, value, mask } => {
                let pos = self.positions(index);
                let (value, mask) = (self.val(*value).clone(), mask.map(|m| self.val(m).clone()));
                atomic(&mut self.slots[tensor.0 as usize], *op, &pos, &value, mask.as_ref());
            }
            Stmt::For { var, start, end, step, body } => {
                // Bounds are read once; the i32 variable stops the loop if it would overflow.
                let (start, end) = (self.val(*start).as_i64() as i32 as i64, self.val(*end).as_i64());
                let mut cur = start;
                while (*step > 0 && cur < end) || (*step < 0 && cur > end) {
                    self.set(*var, Tile::scalar(DType::I32, Elem::I(cur)));
                    if let Flow::Return = self.block(body)? {
                        return Ok(Flow::Return);
                    }
                    cur += step;
                    if cur != cur as i32 as i64 {
                        break;
                    }
                }
            }
            Stmt::If { cond, then, otherwise } => {
                let branch = if self.val(*cond).as_bool() { then } else { otherwise };
                return self.block(branch);
            }
            Stmt::Return => return Ok(Flow::Return),
        }
        Ok(Flow::Next)
    }

    fn op(&self, op: &Op) -> Result<Vec<Tile>, InterpError> {
        let one = |t: Tile| Ok(vec![t]);
        match op {
            Op::Const { value, dtype } => one(Tile::scalar(*dtype, from_f64(*dtype, *value))),
            Op::Arg(p) => match self.slots[p.0 as usize] {
                Slot::Scalar(s) => one(scalar_arg(s)),
                _ => unreachable!("verifier: arg of a scalar parameter"),
            },
            Op::ProgramId(a) => one(Tile::scalar(DType::I32, Elem::I(self.program[*a as usize] as i64))),
            Op::NumPrograms(a) => one(Tile::scalar(DType::I32, Elem::I(self.grid[*a as usize] as i64))),
            Op::Dim { tensor, axis } => {
                let size = self.slots[tensor.0 as usize].tensor().shape[*axis];
                one(Tile::scalar(DType::I64, Elem::I(size as i64)))
            }
            Op::Arange { start, len } => {
                one(Tile::ints(DType::I32, vec![*len], (0..*len as i64).map(|j| (start + j) as i32 as i64).collect()))
            }
            Op::Splat { value, shape } => {
                let t = self.val(*value);
                one(Tile::splat(t.dtype, shape.clone(), t.get(0)))
            }
            Op::Broadcast { value, shape } => one(expand(self.val(*value), shape).into_owned()),
            Op::ExpandDims { value, axis } => {
                let t = self.val(*value).clone();
                let mut shape = t.shape.clone();
                shape.insert(*axis, 1);
                one(t.reshaped(shape))
            }
            Op::Unary { op, value } => one(unary(*op, self.val(*value))),
            Op::Binary { op, lhs, rhs } => {
                binary(*op, self.val(*lhs), self.val(*rhs)).map(|t| vec![t]).map_err(|f| f.at(self.program))
            }
            Op::Select { cond, on_true, on_false } => {
                one(select(self.val(*cond), self.val(*on_true), self.val(*on_false)))
            }
            Op::Cast { value, dtype } => one(cast(self.val(*value), *dtype)),
            Op::Reduce { op, value, axis } => one(reduce(*op, self.val(*value), *axis)),
            Op::CumSum { value, .. } => one(cumsum(self.val(*value))),
            Op::Dot { a, b, trans_b } => one(dot(self.val(*a), self.val(*b), *trans_b)),
            Op::TopK { value, k, sorted } => {
                let (v, i) = topk(self.val(*value), *k, *sorted);
                Ok(vec![v, i])
            }
            Op::Load { tensor, index, mask, other } => {
                let pos = self.positions(index);
                let t = self.slots[tensor.0 as usize].tensor();
                one(load(t, &pos, mask.map(|m| self.val(m)), *other))
            }
            Op::Copy(v) => one(self.val(*v).clone()),
        }
    }
}

fn scalar_arg(s: ScalarValue) -> Tile {
    let d = s.dtype();
    let e = match s {
        ScalarValue::F32(x) => Elem::F(x),
        ScalarValue::I32(x) => Elem::I(x as i64),
        ScalarValue::U32(x) => Elem::I(x as i64),
        ScalarValue::I64(x) => Elem::I(x),
        ScalarValue::Bool(x) => Elem::I(x as i64),
    };
    Tile::scalar(d, e)
}
