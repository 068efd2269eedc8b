//! Element-type parameters: `fn k<KV, ..>(x: Tensor<KV, 1>, ..)` takes its element dtype
//! from the config (`KV` = 0 bf16, 1 f16, 2 f32; bf16 when absent).

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::{DType, ParamKind};
use tessera_dsl_support::prelude::*;
use tessera_dsl_support::{elem_code, elem_dtype_of};

/// `out = x · s` in f32, stored in the tensors' own element type.
#[kernel(tune(BLOCK = [128]))]
fn scale_any<KV, const BLOCK: usize>(x: Tensor<KV, 1>, out: &mut Tensor<KV, 1>, s: f32) {
    let i = arange(0, BLOCK) + program_id(0) * BLOCK as i32;
    let v = x.load([gather(i)]).cast::<f32>() * s;
    out.store([gather(i)], v.cast::<KV>());
}

#[test]
fn the_config_picks_the_element_type() {
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let config = ScaleAny::default_config().with("KV", elem_code(dtype).unwrap());
        let k = ScaleAny::build(&config).unwrap();
        assert!(k.params.iter().take(2).all(|p| matches!(p.kind, ParamKind::Tensor { dtype: d, .. } if d == dtype)));
        let op = ScaleAny::cpu(&config).unwrap();
        let x = HostTensor::from_f64(dtype, &[200], &(0..200).map(|i| i as f64 * 0.25).collect::<Vec<_>>());
        let mut out = HostTensor::full(dtype, &[200], f64::NAN);
        op.run_cpu([2, 1, 1], &x, &mut out, 2.0).unwrap();
        assert_eq!(out.to_f64(), (0..200).map(|i| i as f64 * 0.5).collect::<Vec<_>>(), "{dtype:?}");
        // A tensor of another element type is refused.
        let wrong = if dtype == DType::F32 { DType::BF16 } else { DType::F32 };
        let bad = HostTensor::full(wrong, &[200], 1.0);
        assert!(op.run_cpu([2, 1, 1], &bad, &mut out, 2.0).is_err());
    }
}

#[test]
fn the_element_type_defaults_to_bf16_and_bad_codes_are_refused() {
    let k = ScaleAny::build(&ScaleAny::default_config()).unwrap();
    assert!(matches!(k.params[0].kind, ParamKind::Tensor { dtype: DType::BF16, .. }));
    let e = ScaleAny::build(&ScaleAny::default_config().with("KV", 7)).unwrap_err();
    assert!(e.to_string().contains("KV = 7"), "{e}");
    assert!(ScaleAny::COMPTIME_PARAMS.contains(&"KV"));
    for d in [DType::BF16, DType::F16, DType::F32] {
        assert_eq!(elem_dtype_of(elem_code(d).unwrap()), Some(d));
    }
    assert_eq!(elem_code(DType::I32), None);
}
