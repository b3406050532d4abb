//! Files holding secrets (generated keys): created once, readable by the owner only.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// Creates `path` readable by the owner only; fails if it appeared meanwhile rather than
/// overwrite a key another process just wrote.
pub fn write_new(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("could not write {}", path.display()))
}
