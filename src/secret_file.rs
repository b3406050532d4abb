//! Files and folders holding secrets (generated keys, the SQLite database): created readable
//! by the owner only, and tightened at start-up when an existing one is looser.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

/// Creates `path` readable by the owner only; fails if it appeared meanwhile rather than
/// overwrite a key another process just wrote.
pub fn write_new(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, PRIVATE_FILE);
    let mut file = options
        .open(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("could not write {}", path.display()))
}

/// Creates the folder (and missing parents) as 0700, or tightens an existing one that other
/// users can enter or read.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, PRIVATE_DIR);
    builder
        .create(dir)
        .with_context(|| format!("could not create {}", dir.display()))?;
    tighten(dir)
}

/// Creates an empty file as 0600 unless it exists, then tightens it.
pub fn create_private_file(path: &Path) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, PRIVATE_FILE);
    options
        .open(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    tighten(path)
}

/// Takes group and other permissions off an existing file (to 0600) or folder (to 0700),
/// with a warning; nothing to do when it is missing or already private. A file we may not
/// change (owned by someone else) only warns: it is the operator's to fix.
#[cfg(unix)]
pub fn tighten(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(error).with_context(|| format!("could not inspect {}", path.display()));
        }
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let private = if metadata.is_dir() {
        PRIVATE_DIR
    } else {
        PRIVATE_FILE
    };
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(private)) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            from = format!("{mode:o}"),
            to = format!("{private:o}"),
            "other users could read this; made it private"
        ),
        Err(error) => tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            %error,
            "other users can read this and it could not be made private"
        ),
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn tighten(_: &Path) -> anyhow::Result<()> {
    Ok(())
}
