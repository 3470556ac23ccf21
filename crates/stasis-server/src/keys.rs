//! The server's API key: given, or generated on first start and kept in the data dir.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// File in the data dir holding the generated key.
pub const KEY_FILE: &str = "api-key";

/// Where the key is kept.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// A fresh key in the format every E2B SDK accepts: `e2b_` + 40 lowercase hex digits.
pub fn generate() -> String {
    let bytes: [u8; 20] = rand::random();
    format!("e2b_{}", hex::encode(bytes))
}

/// Whether `key` is usable with every SDK version (some validate `^e2b_[0-9a-f]+$`).
pub fn is_sdk_compatible(key: &str) -> bool {
    key.strip_prefix("e2b_").is_some_and(|h| {
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

/// The key stored in the data dir, or a new one written there (mode 0600).
pub fn load_or_create(data_dir: &Path) -> io::Result<String> {
    let path = key_path(data_dir);
    match fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => return Ok(k.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::create_dir_all(data_dir)?;
    let key = generate();
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(key.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    Ok(key)
}

/// The stored key, if any.
pub fn load(data_dir: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(key_path(data_dir)) {
        Ok(k) => Ok(Some(k.trim().to_owned()).filter(|k| !k.is_empty())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_stable_and_sdk_compatible() {
        let dir = tempfile::tempdir().unwrap();
        let k = load_or_create(dir.path()).unwrap();
        assert!(is_sdk_compatible(&k), "{k}");
        assert_eq!(k.len(), 44);
        assert_eq!(load_or_create(dir.path()).unwrap(), k);
        assert_eq!(load(dir.path()).unwrap().as_deref(), Some(k.as_str()));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(key_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!is_sdk_compatible("e2b_XYZ"));
        assert!(!is_sdk_compatible("abc"));
    }
}
