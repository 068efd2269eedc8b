//! Names and expressions the emitter spells: C++ identifiers for values and parameters,
//! element-wise operator expressions, and index arithmetic of broadcasts.

use crate::ir::{BinaryOp, DType, Index, Kernel, UnaryOp};

use super::super::layout::{coords, ctype, strides};

/// Shape of the tile addressed by an index list.
pub(in crate::emit) fn index_shape(index: &[Index], k: &Kernel) -> Vec<usize> {
    index
        .iter()
        .filter_map(|i| match i {
            Index::At(_) => None,
            Index::Range { len, .. } => Some(*len),
            Index::Gather(g) => Some(k.ty(*g).shape[0]),
        })
        .collect()
}

/// Coordinates in a tile of shape `src` of the element read when it is broadcast to
/// the shape whose coordinates are `coords` (aligned from the right; unit dims read 0).
pub(in crate::emit) fn operand_coords_of(src: &[usize], coords: &[String]) -> Vec<String> {
    let off = coords.len() - src.len();
    src.iter().enumerate().map(|(d, &n)| if n == 1 { "0".to_string() } else { coords[d + off].clone() }).collect()
}

/// The flat source index, for broadcasting `src` to `dst`, of destination element `f`.
pub(super) fn broadcast_index(f: &str, src: &[usize], dst: &[usize]) -> String {
    let cs = coords(f, dst);
    let ss = strides(src);
    let offset = dst.len() - src.len();
    let terms: Vec<String> = (0..src.len())
        .filter(|&d| src[d] != 1)
        .map(|d| if ss[d] == 1 { format!("({})", cs[d + offset]) } else { format!("({}) * {}", cs[d + offset], ss[d]) })
        .collect();
    if terms.is_empty() {
        "0".into()
    } else {
        terms.join(" + ")
    }
}

pub(in crate::emit) fn unary_expr(op: UnaryOp, d: DType, a: &str) -> String {
    let t = ctype(d);
    let f = |e: String| if d == DType::F32 { e } else { format!("tsr::cvt<{t}>({e})") };
    let x = if d == DType::F32 { a.to_string() } else { format!("tsr::to_f32({a})") };
    match op {
        UnaryOp::Neg if d.is_float() => f(format!("-{x}")),
        UnaryOp::Neg => format!("-{a}"),
        UnaryOp::Not if d == DType::Bool => format!("!{a}"),
        UnaryOp::Not => format!("~{a}"),
        UnaryOp::Abs if d.is_float() => f(format!("fabsf({x})")),
        UnaryOp::Abs => format!("({a} < 0 ? -{a} : {a})"),
        UnaryOp::Exp2 => f(format!("exp2f({x})")),
        UnaryOp::Log2 => f(format!("log2f({x})")),
        UnaryOp::Exp => f(format!("expf({x})")),
        UnaryOp::Sqrt => f(format!("sqrtf({x})")),
        UnaryOp::Rsqrt => f(format!("(1.0f / sqrtf({x}))")),
    }
}

pub(in crate::emit) fn binary_expr(op: BinaryOp, d: DType, a: &str, b: &str) -> String {
    use BinaryOp::*;
    let t = ctype(d);
    let float16 = matches!(d, DType::F16 | DType::BF16);
    let (x, y) =
        if float16 { (format!("tsr::to_f32({a})"), format!("tsr::to_f32({b})")) } else { (a.into(), b.into()) };
    let sym = |s: &str| format!("{x} {s} {y}");
    let e = match op {
        Add => sym("+"),
        Sub => sym("-"),
        Mul => sym("*"),
        Div => sym("/"),
        Rem => sym("%"),
        // Shift amounts are taken modulo the width (the interpreter's rule); PTX would
        // clamp them instead.
        Shl | Shr => {
            let bits = if d == DType::I64 { 63 } else { 31 };
            format!("{x} {} ({y} & {bits})", if op == Shl { "<<" } else { ">>" })
        }
        And if d == DType::Bool => sym("&&"),
        Or if d == DType::Bool => sym("||"),
        And => sym("&"),
        Or => sym("|"),
        Max => format!("tsr::vmax({x}, {y})"),
        Min => format!("tsr::vmin({x}, {y})"),
        Lt => return sym("<"),
        Le => return sym("<="),
        Gt => return sym(">"),
        Ge => return sym(">="),
        Eq => return sym("=="),
        Ne => return sym("!="),
    };
    if float16 {
        format!("tsr::cvt<{t}>({e})")
    } else {
        e
    }
}

pub(super) fn axis_letter(a: u8) -> char {
    ['x', 'y', 'z'][a as usize]
}

/// A parameter name as a C++ identifier.
pub(in crate::emit) fn param_name(n: &str) -> String {
    sanitize(n)
}

/// C++ keywords (and CUDA built-ins) a parameter name must not shadow.
const RESERVED: &[&str] = &[
    "alignas",
    "alignof",
    "and",
    "asm",
    "auto",
    "bool",
    "break",
    "case",
    "catch",
    "char",
    "class",
    "const",
    "constexpr",
    "continue",
    "default",
    "delete",
    "do",
    "double",
    "else",
    "enum",
    "explicit",
    "export",
    "extern",
    "false",
    "float",
    "for",
    "friend",
    "goto",
    "if",
    "inline",
    "int",
    "long",
    "mutable",
    "namespace",
    "new",
    "noexcept",
    "not",
    "nullptr",
    "operator",
    "or",
    "private",
    "protected",
    "public",
    "register",
    "return",
    "short",
    "signed",
    "sizeof",
    "static",
    "struct",
    "switch",
    "template",
    "this",
    "throw",
    "true",
    "try",
    "typedef",
    "typename",
    "union",
    "unsigned",
    "using",
    "virtual",
    "void",
    "volatile",
    "while",
    "xor",
    "blockIdx",
    "threadIdx",
    "blockDim",
    "gridDim",
    "warpSize",
    "tsr",
    "base",
    "origin",
    "ok",
    "on",
    "row_ok",
    "f",
    "i",
    "p",
    "pv",
    "pe",
    "dst",
    "src",
    "off",
    "off_e",
    "ok_e",
];

/// `c0`, `o1`, `p2`, ...: the tile coordinates, origins and positions of access loops.
pub(super) fn is_loop_local(s: &str) -> bool {
    s.len() > 1 && s.starts_with(['c', 'o', 'p']) && s[1..].bytes().all(|b| b.is_ascii_digit())
}

/// A C++ identifier for a name: other characters become `_`, a leading digit gets a `_`,
/// and keywords or names the emitted code uses itself get a trailing `_`.
pub(super) fn sanitize(n: &str) -> String {
    let s: String = n.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{s}")
    } else if RESERVED.contains(&s.as_str()) || is_loop_local(&s) {
        format!("{s}_")
    } else {
        s
    }
}

#[cfg(test)]
mod sanitize_tests {
    #[test]
    fn names_never_collide_with_the_emitted_code() {
        assert_eq!(super::sanitize("new"), "new_");
        assert_eq!(super::sanitize("c0"), "c0_");
        assert_eq!(super::sanitize("p12"), "p12_");
        assert_eq!(super::sanitize("k_tile"), "k_tile");
        assert_eq!(super::sanitize("2x"), "_2x");
    }
}
