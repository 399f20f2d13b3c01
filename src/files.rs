//! Reading the small files the proxy is given (the DC/OS CLI config, its own settings, a
//! CA bundle, a path secret) as hostile input: only a regular file is read, never more
//! than a limit, so a FIFO, a device or a huge file can neither hang nor exhaust the
//! proxy.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Why a file was not read.
#[derive(Debug)]
pub enum ReadError {
    /// It could not be opened or read.
    Io(io::Error),
    /// It is a directory, FIFO, socket or device.
    NotAFile,
    /// It holds more than the limit.
    TooLarge,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => e.fmt(f),
            Self::NotAFile => f.write_str("not a regular file"),
            Self::TooLarge => f.write_str("the file is too large"),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// The bytes of the regular file at `path`, if it holds at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    // Checked before opening: opening a FIFO for reading would wait for a writer.
    if !std::fs::metadata(path)?.is_file() {
        return Err(ReadError::NotAFile);
    }
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile);
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after the check: never read more than one byte past the limit.
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_small_regular_file_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(read_bounded(&file, 5).unwrap(), b"12345");
        assert!(matches!(read_bounded(&file, 4), Err(ReadError::TooLarge)));
        assert!(matches!(
            read_bounded(dir.path(), 5),
            Err(ReadError::NotAFile)
        ));
        let missing = read_bounded(&dir.path().join("nope"), 5);
        assert!(matches!(missing, Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound));
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            // No mkfifo on this system: a socket file is another non-regular file.
            let _sock = std::os::unix::net::UnixListener::bind(&fifo).unwrap();
            assert!(matches!(read_bounded(&fifo, 5), Err(ReadError::NotAFile)));
            return;
        }
        assert!(matches!(read_bounded(&fifo, 5), Err(ReadError::NotAFile)));
    }
}
