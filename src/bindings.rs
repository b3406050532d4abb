//! The TypeScript bindings under `bindings/`, generated from the procedure tree.

use std::path::Path;

use anyhow::Context as _;

use crate::app;
use crate::reason::Reason;
use crate::rpc;

/// The file the Expo app imports: `import type { AppRouter } from ".../bindings"`.
pub const FILE_NAME: &str = "index.ts";

pub fn render() -> anyhow::Result<String> {
    rpc::typescript::render::<_, Reason>(&app::router())
        .context("could not export the TypeScript bindings")
}

pub fn write(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let path = dir.join(FILE_NAME);
    std::fs::write(&path, render()?).with_context(|| format!("could not write {}", path.display()))
}
