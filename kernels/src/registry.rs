//! Every `#[kernel]` of this crate by name, for tools (`tessera compile --list`).

use tessera_dsl_support::KernelEntry;

/// The kernels of `tessera-kernels`, in module order.
pub fn registry() -> Vec<KernelEntry> {
    vec![
        crate::append::LandmarksMean::ENTRY,
        crate::append::KvAppendRows::ENTRY,
        crate::block_sparse::BlockSparseDecodeSplit::ENTRY,
        crate::centroid::KmeansAssign::ENTRY,
        crate::centroid::KmeansAccumulate::ENTRY,
        crate::centroid::KmeansFinalize::ENTRY,
        crate::centroid::CentroidPermute::ENTRY,
        crate::centroid::CentroidTileLse::ENTRY,
        crate::centroid::CentroidSelect::ENTRY,
        crate::centroid::CentroidPackRows::ENTRY,
        crate::centroid_two_level::CentroidLse::ENTRY,
        crate::centroid_two_level::CentroidFineScores::ENTRY,
        crate::centroid_two_level::CentroidSelectIds::ENTRY,
        crate::combine::AttnCombine::ENTRY,
        crate::decoder_ops::RmsNormRows::ENTRY,
        crate::decoder_ops::AddRmsNormRows::ENTRY,
        crate::decoder_ops::RopeQk::ENTRY,
        crate::decoder_ops::SwigluRows::ENTRY,
        crate::decoder_ops::EmbeddingBf16::ENTRY,
        crate::decoder_ops::EmbeddingF32::ENTRY,
        crate::decoder_ops::ArgmaxRowsF32::ENTRY,
        crate::decoder_ops::ArgmaxRowsBf16::ENTRY,
        crate::dense::DenseDecodeSplit::ENTRY,
        crate::hip::HipInitNodes::ENTRY,
        crate::hip::HipScoreChildren::ENTRY,
        crate::hip::HipSelectChildren::ENTRY,
        crate::hip::HipFinalize::ENTRY,
        crate::lm_infinite::LmInfiniteDecodeSplit::ENTRY,
        crate::sink_window::SinkWindowDecodeSplit::ENTRY,
        crate::snapkv::SnapkvRowStats::ENTRY,
        crate::snapkv::SnapkvRowMerge::ENTRY,
        crate::snapkv::SnapkvVotes::ENTRY,
        crate::snapkv::SnapkvPoolTopk::ENTRY,
        crate::snapkv::SnapkvMerge::ENTRY,
        crate::snapkv::SnapkvCompress::ENTRY,
        crate::topk::BlockScoresTopk::ENTRY,
        crate::topk::TopkMerge::ENTRY,
        crate::tree::TreeVerifySplit::ENTRY,
    ]
}

/// The kernel called `name`.
pub fn find(name: &str) -> Option<KernelEntry> {
    registry().into_iter().find(|e| e.name == name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_kernel_builds_and_emits_at_its_example_config() {
        // What `tessera compile <kernel>` does with no GPU and no --config.
        for e in super::registry() {
            let config = (e.example_config)();
            let k = (e.build)(&config).unwrap_or_else(|err| panic!("{} at {config}: {err}", e.name));
            assert!(!tessera_codegen::emit::emit_cuda(&k).source.is_empty(), "{}", e.name);
        }
    }

    #[test]
    fn names_are_unique_and_defaults_name_the_warp_count() {
        let r = super::registry();
        let mut names: Vec<&str> = r.iter().map(|e| e.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), r.len());
        for e in &r {
            assert!(e.comptime_params.contains(&"WARPS"), "{}", e.name);
            assert!((e.default_config)().get("WARPS").is_some(), "{}", e.name);
            assert!(!e.summary.is_empty(), "{} has no doc comment (its `tessera kernels` summary)", e.name);
        }
    }
}
