mod kernels;
use kernels::*;
use tessera_dsl_support::KernelConfig;
#[test]
fn builds() {
    for k in [
        vector_add::VectorAdd::build(&vector_add::VectorAdd::default_config()),
        row_softmax::RowSoftmax::build(&row_softmax::RowSoftmax::default_config()),
        matmul::Matmul::build(&matmul::Matmul::default_config()),
        flash_decode::FlashDecode::build(
            &flash_decode::FlashDecode::default_config().with("GROUP", 4).with("HEAD_DIM", 128),
        ),
        flash_decode::FlashDecodeCombine::build(&KernelConfig::from_pairs(&[("HEAD_DIM", 128), ("MAX_SPLITS", 64)])),
    ] {
        k.unwrap();
    }
}
