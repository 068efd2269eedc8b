use tessera_dsl_support::prelude::*;

// Compile-time values are not generic parameters of a tile function.
#[tile_fn]
fn scaled<const S: usize>(x: Tile) -> Tile {
    x * 2.0
}

fn main() {}
