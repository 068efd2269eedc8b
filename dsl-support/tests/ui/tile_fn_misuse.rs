use tessera_dsl_support::prelude::*;

// A tile function returns tiles.
#[tile_fn]
fn no_result(x: Tile) {
    let _y = exp2(x);
}

// Its parameters are tiles.
#[tile_fn]
fn scalar_param(x: Tile, n: usize) -> Tile {
    x
}

// The tail holds as many tiles as the signature promises.
#[tile_fn]
fn wrong_arity(x: Tile) -> (Tile, Tile) {
    x
}

fn main() {}
