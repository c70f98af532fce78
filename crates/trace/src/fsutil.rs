//! Small file-system helpers shared by every command that writes results.

use std::io;
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` so that readers never see a half-written file: write a sibling temp
/// file, then rename it over `path`.
///
/// Only regular files (or paths that do not exist yet) are replaced that way. Anything else —
/// `/dev/null`, `/dev/stdout`, a named pipe — is written in place: renaming over it would
/// replace the device node with a regular file (as root, `--summary-file /dev/null` would
/// otherwise turn `/dev/null` into a file for every process on the machine).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => return std::fs::write(path, bytes),
        _ => {}
    }
    let tmp = temp_sibling(path);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// `dir/.name.tmp.<pid>`: hidden, next to the target (same file system, so rename is atomic),
/// and distinct per process so two writers never share a temp file.
fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_regular_files_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temp file left behind");
    }

    #[cfg(unix)]
    #[test]
    fn device_nodes_are_written_in_place_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let null = Path::new("/dev/null");
        if !std::fs::metadata(null).is_ok_and(|m| m.file_type().is_char_device()) {
            return; // not a normal /dev here: nothing to check
        }
        write_atomic(null, b"discarded").unwrap();
        let meta = std::fs::metadata(null).unwrap();
        assert!(meta.file_type().is_char_device(), "/dev/null was replaced");
    }
}
