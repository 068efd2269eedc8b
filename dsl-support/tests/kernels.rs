//! Shared by the integration tests: the example kernels of `examples/kernels/`.
#![allow(dead_code)]

#[path = "../../examples/kernels/flash_decode.rs"]
pub mod flash_decode;
#[path = "../../examples/kernels/gather_rows.rs"]
pub mod gather_rows;
#[path = "../../examples/kernels/matmul.rs"]
pub mod matmul;
#[path = "../../examples/kernels/prefix_sum.rs"]
pub mod prefix_sum;
#[path = "../../examples/kernels/row_softmax.rs"]
pub mod row_softmax;
#[path = "../../examples/kernels/row_topk.rs"]
pub mod row_topk;
#[path = "../../examples/kernels/vector_add.rs"]
pub mod vector_add;
