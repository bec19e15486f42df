//! Writing a refresh token to its file, atomically.
//!
//! Why so careful: the file holds the only credential of an account, and a
//! provider that rotates refresh tokens refuses the old one once it issued
//! a new one. A torn or lost write would lock the account out until someone
//! signs in again. So: a temporary file in the same folder (mode 0600 from
//! its creation), written and fsynced, renamed over the old file, then the
//! folder fsynced so that the rename itself survives a crash.

use std::io::Write;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

/// Replaces `path` with `secret` and a newline, atomically, mode 0600.
pub fn write_secret_file(path: &Path, secret: &SecretString) -> std::io::Result<()> {
    let dir: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    // tempfile creates the file with mode 0600 and O_EXCL.
    let mut tmp = tempfile::Builder::new()
        .prefix(".popferry-token-")
        .tempfile_in(&dir)?;
    set_private(tmp.as_file())?;
    tmp.write_all(secret.expose_secret().as_bytes())?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(())
}

#[cfg(unix)]
fn set_private(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn set_private(_file: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

/// The same, off the async runtime.
pub async fn write_secret_file_async(path: PathBuf, secret: SecretString) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || write_secret_file(&path, &secret))
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_private_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rt");
        std::fs::write(&path, "old\n").expect("write");
        write_secret_file(&path, &SecretString::from("new-token")).expect("store");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new-token\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["rt"]);
    }
}
