//! HiP tree-pruned block selection (HiP Attention v1.1, algorithms.md §2), per
//! (batch, KV head), for decode.
//!
//! Keys outside sink + window, `[0, T')` with `T' = seq_len − window`, are cut into
//! `nb = ceil(T' / BK)` blocks of `BK` keys. `K` nodes (block ranges) start as an even
//! split of the `nb` blocks ([`init_nodes`]); each refinement step splits every node in two
//! (the left child takes the larger half), scores each child by its **representative
//! block** — the `BK` keys of the block at the child's centre, `(lo + hi) / 2` — as the max
//! over those keys and over the `GROUP` query heads of the KV head of `q · k` (so search
//! traffic scales with KV heads, not query heads), and keeps the top-`K` children (ties:
//! the lower child index, child `2i` / `2i + 1` = left / right of node `i`). After
//! [`refine_steps`] steps every node is one block; the selected block indices (ascending)
//! feed [`crate::BlockSparseDecode`] with block size `BK` together with sink + window.
//!
//! [`tree_search`] is the algorithm on the host with any scorer (the f64 reference and the
//! recall tool use it); the `#[kernel]`s below run it on the device, one launch pair per
//! step, driven by [`HipSelect`]'s host loop.
//!
//! **Mask refresh.** The selection is recomputed every `R` decode steps and reused in
//! between (HiP's `HIP_REFRESH_INTERVAL`, 8 in the paper's demo): host logic — the caller
//! keeps `block_idx`/`block_count` and reruns [`HipSelect`] when `step % R == 0`; tokens
//! appended since the last refresh are inside the sliding window, so they are attended
//! anyway. Survivor scores are not cached across steps (HiP v1.1 caches them so that only
//! the new child is scored): each step rescores both children, 2× the search dot products
//! for a simpler kernel.

/// A node: the block range `[lo, hi)`; empty when `lo == hi`.
pub type Node = (usize, usize);

/// `k` nodes splitting `nb` blocks evenly (`[i·nb/k, (i+1)·nb/k)`); with fewer blocks than
/// nodes, nodes `0..nb` are the single blocks and the rest are empty.
pub fn init_nodes(nb: usize, k: usize) -> Vec<Node> {
    (0..k)
        .map(|i| {
            if nb >= k {
                (i * nb / k, (i + 1) * nb / k)
            } else if i < nb {
                (i, i + 1)
            } else {
                (nb, nb)
            }
        })
        .collect()
}

/// Refinement steps until every node is one block: `ceil(log2(ceil(nb / k)))`.
pub fn refine_steps(nb: usize, k: usize) -> usize {
    let longest = if k == 0 || nb <= k { 1 } else { nb.div_ceil(k) };
    longest.next_power_of_two().trailing_zeros() as usize
}

/// The two children of a node: left `[lo, lo + ceil(len/2))`, right the rest.
pub fn children((lo, hi): Node) -> [Node; 2] {
    let mid = lo + (hi - lo).div_ceil(2);
    [(lo, mid), (mid, hi)]
}

/// The representative (centre) block of a non-empty node.
pub fn centre((lo, hi): Node) -> Option<usize> {
    (hi > lo).then_some((lo + hi) / 2)
}

/// One refinement step: split, score each non-empty child's centre block with `score`,
/// keep the top `nodes.len()` (descending score, ties to the lower child index; empty
/// children score -inf).
pub fn refine(nodes: &[Node], score: &mut impl FnMut(usize) -> f64) -> Vec<Node> {
    let kids: Vec<Node> = nodes.iter().flat_map(|&n| children(n)).collect();
    let s: Vec<f64> = kids.iter().map(|&c| centre(c).map_or(f64::NEG_INFINITY, &mut *score)).collect();
    let mut order: Vec<usize> = (0..kids.len()).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
    order.truncate(nodes.len());
    order.into_iter().map(|c| kids[c]).collect()
}

/// The whole search: `k` nodes over `nb` blocks, `score(block)` the representative score
/// of a block. Returns the selected blocks in ascending order (`min(k, nb)` of them).
pub fn tree_search(nb: usize, k: usize, mut score: impl FnMut(usize) -> f64) -> Vec<usize> {
    let mut nodes = init_nodes(nb, k);
    for _ in 0..refine_steps(nb, k) {
        nodes = refine(&nodes, &mut score);
    }
    let mut out: Vec<usize> = nodes.iter().filter(|n| n.1 > n.0).map(|n| n.0).collect();
    debug_assert!(nodes.iter().all(|n| n.1 - n.0 <= 1));
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_and_steps() {
        assert_eq!(init_nodes(10, 4), vec![(0, 2), (2, 5), (5, 7), (7, 10)]);
        assert_eq!(init_nodes(2, 4), vec![(0, 1), (1, 2), (2, 2), (2, 2)]);
        assert_eq!(refine_steps(10, 4), 2);
        assert_eq!(refine_steps(8, 4), 1);
        assert_eq!(refine_steps(3, 4), 0);
        assert_eq!(refine_steps(4096, 32), 7);
        assert_eq!(children((3, 6)), [(3, 5), (5, 6)]);
        assert_eq!(children((3, 4)), [(3, 4), (4, 4)]);
        assert_eq!(centre((3, 5)), Some(4));
        assert_eq!(centre((3, 3)), None);
    }

    #[test]
    fn search_finds_a_planted_block_and_covers_small_inputs() {
        // Score peaks at block 77: the search must keep it.
        for k in [3, 8] {
            let sel = tree_search(200, k, |b| -((b as f64) - 77.0).abs());
            assert!(sel.contains(&77), "k {k}: {sel:?}");
            assert_eq!(sel.len(), k);
        }
        // One node: a greedy descent that ends next to the peak (ties go left).
        assert_eq!(tree_search(200, 1, |b| -((b as f64) - 77.0).abs()), vec![76]);
        assert_eq!(tree_search(3, 8, |_| 0.0), vec![0, 1, 2]);
        assert_eq!(tree_search(0, 4, |_| 0.0), Vec::<usize>::new());
        // Monotone score: the k largest blocks.
        assert_eq!(tree_search(64, 4, |b| b as f64), vec![60, 61, 62, 63]);
    }
}
