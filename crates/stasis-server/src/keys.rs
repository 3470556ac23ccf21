//! The server's API key: given, or generated on first start and kept in the data dir.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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

/// The key stored in the data dir, or a new one written there. The file is readable by
/// its owner only (0600; a wider one left by an earlier version is narrowed), and a data
/// dir created here is 0700, whatever the umask.
pub fn load_or_create(data_dir: &Path) -> io::Result<String> {
    let path = key_path(data_dir);
    match fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => {
            if fs::metadata(&path)?.permissions().mode() & 0o777 != 0o600 {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
            }
            return Ok(k.trim().to_owned());
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)?;
    let key = generate();
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // A leftover temporary file keeps its mode; `mode` applies only to new ones.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
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
        let mode = fs::metadata(key_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!is_sdk_compatible("e2b_XYZ"));
        assert!(!is_sdk_compatible("abc"));
    }

    /// Runs the test named `name` again in a child process whose umask is 022, the
    /// permissive default, and returns false; returns true in that child.
    fn in_child_with_umask_022(name: &str) -> bool {
        const CHILD: &str = "STASIS_TEST_UMASK_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let status = fs::read_to_string("/proc/self/status").unwrap();
            assert!(status.contains("Umask:\t0022"), "{status}");
            return true;
        }
        let st = std::process::Command::new("sh")
            .args(["-c", "umask 022 && exec \"$0\" \"$@\""])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1"])
            .env(CHILD, "1")
            .status()
            .unwrap();
        assert!(st.success(), "the test failed in the child with umask 022");
        false
    }

    fn mode(p: &Path) -> String {
        format!(
            "{:o}",
            fs::metadata(p).unwrap().permissions().mode() & 0o777
        )
    }

    /// The server's secrets at rest: the API key, the webhooks (their signing secrets)
    /// and the catalog (every sandbox's access token).
    #[test]
    fn data_dir_secrets_are_private_under_a_permissive_umask() {
        if !in_child_with_umask_022(
            "keys::tests::data_dir_secrets_are_private_under_a_permissive_umask",
        ) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        load_or_create(&data).unwrap();
        assert_eq!(mode(&data), "700", "a data dir created for the key");
        assert_eq!(mode(&key_path(&data)), "600");
        // A key file an earlier version left readable is narrowed.
        fs::set_permissions(key_path(&data), fs::Permissions::from_mode(0o644)).unwrap();
        load_or_create(&data).unwrap();
        assert_eq!(mode(&key_path(&data)), "600");

        let hooks = crate::webhooks::Webhooks::open(&data).unwrap();
        hooks
            .create(crate::webhooks::WebhookRequest {
                url: Some("http://127.0.0.1:9/h".into()),
                signature_secret: Some("s".into()),
                ..Default::default()
            })
            .unwrap();
        let file = data.join("webhooks.json");
        assert_eq!(mode(&file), "600");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        crate::webhooks::Webhooks::open(&data).unwrap();
        assert_eq!(mode(&file), "600", "webhooks.json after reopen");

        let db = data.join("catalog.db");
        let c = stasis_catalog::Catalog::open(&db).unwrap();
        for name in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
            let p = data.join(name);
            if p.exists() {
                assert_eq!(mode(&p), "600", "{name}");
            }
        }
        assert_eq!(mode(&db), "600");
        drop(c);
    }
}
