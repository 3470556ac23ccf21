//! Resolving client paths: `~` and relative paths start at the user's home; the result
//! is absolute and lexically normalized (`.` and `..` removed, never above `/`).
#![forbid(unsafe_code)]

use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// Why a path was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PathError {
    /// Empty path.
    #[error("path is required")]
    Empty,
    /// Contains a NUL byte.
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
}

/// Resolves `path` for a user whose home is `home`.
pub fn resolve(path: &str, home: &Path) -> Result<PathBuf, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.contains('\0') {
        return Err(PathError::Nul(path.to_string()));
    }
    let joined = if path == "~" {
        home.to_path_buf()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home.join(rest)
    } else if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        home.join(path)
    };
    Ok(normalize(&joined))
}

/// Lexical normalization of an absolute path.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_envd() {
        let home = Path::new("/home/user");
        let r = |p| resolve(p, home).unwrap();
        assert_eq!(r("~"), PathBuf::from("/home/user"));
        assert_eq!(r("~/a/b"), PathBuf::from("/home/user/a/b"));
        assert_eq!(r("a.txt"), PathBuf::from("/home/user/a.txt"));
        assert_eq!(r("/tmp/./x/../y"), PathBuf::from("/tmp/y"));
        assert_eq!(r("/../../etc"), PathBuf::from("/etc"));
        assert_eq!(r("../x"), PathBuf::from("/home/x"));
        assert_eq!(resolve("", home), Err(PathError::Empty));
        assert!(matches!(resolve("a\0b", home), Err(PathError::Nul(_))));
    }
}
