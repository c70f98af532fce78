//! Small file-system helpers shared by every command that reads inputs or writes results.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The most bytes read from stdin (`-`): a regular file's size is known before reading it, a
/// pipe's is not, and `yes | inferencelab ...` must end with a message, not out of memory.
pub const MAX_STDIN_BYTES: u64 = 8 << 30;

/// Read an input file whole, decompressed when it is gzip or zstd (told by its magic bytes,
/// [`crate::input`]). `-` is stdin (at most [`MAX_STDIN_BYTES`] once decompressed); anything
/// else must be a regular file: a FIFO would block until a writer appears and `/dev/zero` never
/// ends, so both are refused with a message saying how to pipe data in instead.
pub fn read_input(path: &Path) -> io::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        return read_limited(crate::input::open(path)?.reader, MAX_STDIN_BYTES);
    }
    check_regular(path)?;
    if path.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a directory, not a file",
        ));
    }
    let input = crate::input::open(path)?;
    if input.compression == crate::input::Compression::None {
        return std::fs::read(path);
    }
    let mut buf = Vec::new();
    { input }.reader.read_to_end(&mut buf)?;
    Ok(buf)
}

/// [`read_input`] as UTF-8 text.
pub fn read_input_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read_input(path)?).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Refuse what is not a regular file (or a directory, which callers handle themselves), naming
/// what it is.
pub fn check_regular(path: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    let ft = meta.file_type();
    if ft.is_file() || ft.is_dir() {
        return Ok(());
    }
    let what = kind_of(&ft);
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "is {what}, not a regular file: give a file, or `-` and pipe the data in \
             (e.g. `zcat trace.gz | inferencelab ... -i -`)"
        ),
    ))
}

#[cfg(unix)]
fn kind_of(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a named pipe (FIFO)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn kind_of(_: &std::fs::FileType) -> &'static str {
    "a special file"
}

/// Everything `r` yields, or an error once it passes `limit` bytes.
pub fn read_limited(r: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("stdin holds more than {limit} bytes: write it to a file and give its path"),
        ));
    }
    Ok(buf)
}

/// Write `bytes` to `path` so that readers never see a half-written file: write a sibling temp
/// file, then rename it over `path`.
///
/// Only regular files (or paths that do not exist yet) are replaced that way. Anything else —
/// `/dev/null`, `/dev/stdout`, a named pipe — is written in place: renaming over it would
/// replace the device node with a regular file (as root, `--summary-file /dev/null` would
/// otherwise turn `/dev/null` into a file for every process on the machine).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Write `value` as pretty-printed JSON ending in a newline to `path` through [`write_atomic`],
/// creating missing parent directories: the one JSON file writer of every command's summaries
/// and results.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// [`write_atomic`] for output written piece by piece (a summary streamed row by row): `write`
/// gets a buffered writer; the file replaces `path` only when `write` succeeds.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let in_place = matches!(std::fs::metadata(path), Ok(meta) if !meta.file_type().is_file());
    let target = if in_place {
        path.to_path_buf()
    } else {
        temp_sibling(path)
    };
    let result = std::fs::File::create(&target).and_then(|f| {
        let mut w = io::BufWriter::new(f);
        write(&mut w)?;
        w.flush()
    });
    if in_place {
        return result;
    }
    result
        .and_then(|()| std::fs::rename(&target, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&target);
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
    fn read_limited_stops_at_the_limit() {
        assert_eq!(read_limited(&b"abc"[..], 3).unwrap(), b"abc");
        let e = read_limited(io::repeat(b'x'), 10).unwrap_err();
        assert!(e.to_string().contains("more than 10 bytes"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn devices_are_refused_as_inputs() {
        let e = read_input(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
    }

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

    #[test]
    fn json_is_pretty_ends_in_a_newline_and_makes_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("new/sub/r.json");
        write_json(&p, &serde_json::json!({"a": [1, 2]})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\n  \"a\": [\n    1,\n    2\n  ]\n}\n"
        );
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
