//! `tessera doctor`: what the runtime finds (NVRTC, driver, GPUs, cache). Never needs a GPU.

use anyhow::Result;

pub fn run() -> Result<()> {
    print!("{}", tessera_runtime::doctor());
    Ok(())
}
