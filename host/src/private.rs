//! Files only the host's user may read: directories made 0700, files made
//! 0600 and exclusively (never through a link someone left in the way),
//! small files replaced atomically, and the 32-byte keys the host keeps
//! outside what they protect.

use std::io::Write;
use std::path::Path;

/// Bytes of a host key.
pub const KEY_LEN: usize = 32;

/// Make `dir` and its missing parents, mode 0700 when new.
pub fn dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Write a new file, mode 0600, and sync it; fails if anything (a link
/// included) is already at `path`.
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Replace the file at `path` with `bytes` in one step: a new private
/// file beside it, synced, renamed over it. A reader sees the old contents
/// or the new, never a part.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let nonce: u64 = rand::random();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{nonce:016x}.tmp"));
    write_new(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    if let Some(parent) = path.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The key in `path`, if there is a whole one.
pub fn read_key(path: &Path) -> Option<[u8; KEY_LEN]> {
    std::fs::read(path).ok()?.try_into().ok()
}

/// The key in `path`, or a new random one written there (mode 0600) when
/// there is none or it is not a whole key.
pub fn key(path: &Path) -> std::io::Result<[u8; KEY_LEN]> {
    if let Some(key) = read_key(path) {
        return Ok(key);
    }
    if let Some(parent) = path.parent() {
        dir(parent)?;
    }
    let key: [u8; KEY_LEN] = rand::random();
    let _ = std::fs::remove_file(path);
    write_new(path, &key)?;
    Ok(key)
}

/// From now on, files and directories this process creates are its
/// owner's alone (umask 077): the store's files, snapshots and logs.
pub fn only_owner_creates() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Make everything under `dir` (not following links) its owner's alone:
/// files 0600 at most, directories 0700 at most.
#[cfg(unix)]
pub fn restrict_tree(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        let mode = meta.permissions().mode();
        if (meta.is_file() || meta.is_dir()) && mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o700))?;
        }
        if meta.is_dir() {
            restrict_tree(&path)?;
        }
    }
    Ok(())
}

/// Make everything under `dir` its owner's alone.
#[cfg(not(unix))]
pub fn restrict_tree(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("k.key");
        let a = key(&path).unwrap();
        assert_eq!(key(&path).unwrap(), a, "an existing key is kept");
        assert_eq!(read_key(&path), Some(a));
        std::fs::write(&path, b"short").unwrap();
        assert_eq!(read_key(&path), None, "a partial key is no key");
        assert_ne!(key(&path).unwrap(), a);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn a_link_in_the_way_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&target, &link).unwrap();
            assert!(write_new(&link, b"evil").is_err());
            replace(&link, b"new").unwrap();
            assert_eq!(std::fs::read(&target).unwrap(), b"keep");
            assert_eq!(std::fs::read(&link).unwrap(), b"new");
            assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
        }
    }
}
