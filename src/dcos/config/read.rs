//! Reading one config file as hostile input, through one seam.
//!
//! Every `dcos.toml` discovery reads (the chosen cluster's, a cluster's name, the legacy
//! file) goes through a [`ReadConfig`]: [`Disk`] in the program, which reads a regular
//! file of at most [`MAX_CONFIG_BYTES`] with [`read_bounded`] (so a FIFO, a device or a
//! huge file can neither hang nor exhaust the proxy), and in tests a recorder that counts
//! the reads. The text must be UTF-8; no error here holds the file's contents.

use std::io;
use std::path::Path;

use super::error::{ConfigError, io_error};
use crate::files::{ReadError, read_bounded};

/// The largest config file we read, in bytes (1 MiB). Real files are well under 10 KiB;
/// anything bigger is not a DC/OS CLI config and is refused rather than read into memory.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// How discovery reads a config file's bytes: [`Disk`] in the program; tests pass a
/// recorder to count the reads.
pub(super) trait ReadConfig {
    /// The bytes of the regular file at `path`, if it holds at most [`MAX_CONFIG_BYTES`].
    fn read(&self, path: &Path) -> Result<Vec<u8>, ReadError>;
}

/// The real filesystem, through [`read_bounded`].
pub(super) struct Disk;

impl ReadConfig for Disk {
    fn read(&self, path: &Path) -> Result<Vec<u8>, ReadError> {
        read_bounded(path, MAX_CONFIG_BYTES)
    }
}

/// Read a config file's text: it must be a regular file of at most [`MAX_CONFIG_BYTES`]
/// bytes and valid UTF-8. Errors name the file.
pub(super) fn read_config_text(files: &dyn ReadConfig, path: &Path) -> Result<String, ConfigError> {
    let bytes = files.read(path).map_err(|e| match e {
        ReadError::Io(e) => io_error(path, e),
        ReadError::NotAFile => ConfigError::NotAFile {
            path: path.to_path_buf(),
        },
        ReadError::TooLarge => ConfigError::TooLarge {
            path: path.to_path_buf(),
        },
    })?;
    String::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// Like [`read_config_text`], but a missing file is `Ok(None)`: a cluster directory
/// without `dcos.toml` reads as an empty file, as the Go CLI does.
pub(super) fn read_optional(
    files: &dyn ReadConfig,
    path: &Path,
) -> Result<Option<String>, ConfigError> {
    match read_config_text(files, path) {
        Ok(text) => Ok(Some(text)),
        Err(ConfigError::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;
    use crate::dcos::config::layout::CONFIG_FILE;
    use crate::dcos::config::test_support::*;
    use crate::dcos::config::{DiscoverOptions, discover};

    fn temp_cluster(contents: &[u8]) -> (tempfile::TempDir, DiscoverOptions, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("clusters").join("t1");
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join(CONFIG_FILE);
        fs::write(&file, contents).unwrap();
        let o = DiscoverOptions {
            dcos_dir: Some(tmp.path().to_path_buf()),
            ..DiscoverOptions::default()
        };
        (tmp, o, file)
    }

    #[test]
    fn huge_file_is_refused() {
        let mut big = b"[core]\ndcos_url = \"https://m.example.com\"\n#".to_vec();
        big.resize(2 * 1024 * 1024, b'x');
        let (_tmp, o, file) = temp_cluster(&big);
        let (err, msg) = discover_err(&o, &no_env());
        assert!(matches!(err, ConfigError::TooLarge { .. }), "{err:?}");
        assert!(
            msg.contains(&file.display().to_string()) && msg.contains("1 MiB"),
            "{msg}"
        );
        // Exactly the limit is still read.
        let mut max = b"[core]\ndcos_url = \"https://m.example.com\"\n#".to_vec();
        max.resize(MAX_CONFIG_BYTES as usize, b'x');
        let (_tmp, o, _) = temp_cluster(&max);
        assert_eq!(
            discover(&o, &no_env()).unwrap().dcos_url,
            "https://m.example.com/"
        );
    }

    #[test]
    fn non_utf8_file_is_refused() {
        let (_tmp, o, file) =
            temp_cluster(b"[core]\ndcos_url = \"https://m.example.com\"\n\xff\xfe");
        let (err, msg) = discover_err(&o, &no_env());
        assert!(matches!(err, ConfigError::NotUtf8 { .. }), "{err:?}");
        assert_eq!(
            msg,
            format!(
                "{} is not valid UTF-8, so it is not a TOML file",
                file.display()
            )
        );
    }

    #[test]
    fn a_directory_named_dcos_toml_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join(CONFIG_FILE)).unwrap();
        let o = DiscoverOptions {
            dcos_dir: Some(tmp.path().to_path_buf()),
            ..DiscoverOptions::default()
        };
        let (err, _) = discover_err(&o, &no_env());
        assert!(matches!(err, ConfigError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn io_errors_name_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let plain = tmp.path().join("plain");
        fs::write(&plain, "x").unwrap();
        let below = plain.join("dcos.toml");
        let err = read_config_text(&Disk, &below).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("cannot read {}: ", below.display())),
            "{msg}"
        );
    }

    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, o, file) =
            temp_cluster(format!("[core]\ndcos_acs_token = \"{TOKEN}\"").as_bytes());
        fs::set_permissions(&file, fs::Permissions::from_mode(0o000)).unwrap();
        if fs::File::open(&file).is_ok() {
            // Running as root: permissions do not apply; nothing to test here.
            return;
        }
        let (err, msg) = discover_err(&o, &no_env());
        assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert!(msg.to_lowercase().contains("permission denied"), "{msg}");
    }
}
