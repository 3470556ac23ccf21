//! Identifiers, resource specs and units shared by every Stasis crate.
//!
//! Nothing here does I/O. Every identifier that ends up in a path or a command line is
//! validated on construction, so holding a [`SandboxId`] or a [`TemplateName`] means
//! holding a string that is safe to use as one path component.
#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} {value:?} is longer than {max} characters")]
    TooLong {
        kind: &'static str,
        value: String,
        max: usize,
    },
    #[error("{kind} {value:?} has a character outside [a-z0-9-_.] or starts with one of -_.")]
    BadChar { kind: &'static str, value: String },
}

fn validate(kind: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > max {
        return Err(IdError::TooLong {
            kind,
            value: value.to_owned(),
            max,
        });
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
    let first_ok = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !first_ok || !value.chars().all(ok_char) {
        return Err(IdError::BadChar {
            kind,
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                validate($kind, s, $max)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                validate($kind, &s, $max)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A sandbox identifier: lowercase letters, digits, `-_.`; at most 48 characters.
    SandboxId,
    "sandbox id",
    48
);
id_type!(
    /// A template name such as `base` or `code-interpreter-v1`.
    TemplateName,
    "template name",
    64
);

impl SandboxId {
    /// Length of generated ids; E2B's ids have the same shape (20 lowercase alphanumerics).
    pub const GENERATED_LEN: usize = 20;

    /// A fresh random id of [`Self::GENERATED_LEN`] lowercase letters and digits.
    pub fn generate() -> Self {
        use rand::Rng;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::thread_rng();
        // The first character is a letter so the id never looks like a number.
        let mut s = String::with_capacity(Self::GENERATED_LEN);
        s.push(ALPHABET[rng.gen_range(0..26)] as char);
        for _ in 1..Self::GENERATED_LEN {
            s.push(ALPHABET[rng.gen_range(0..ALPHABET.len())] as char);
        }
        Self(s)
    }
}

/// CPU, memory, process and disk limits of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU quota in thousandths of a CPU (1000 = one core).
    pub cpu_millis: u32,
    /// Memory limit in bytes (also the memory+swap limit).
    pub memory_bytes: u64,
    /// Maximum number of tasks (processes and threads).
    pub pids: u32,
}

impl Resources {
    pub const MIB: u64 = 1024 * 1024;
}

impl Default for Resources {
    /// E2B's default sandbox size: 2 vCPU, 512 MiB.
    fn default() -> Self {
        Self {
            cpu_millis: 2000,
            memory_bytes: 512 * Self::MIB,
            pids: 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = SandboxId::generate();
        let b = SandboxId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), SandboxId::GENERATED_LEN);
        assert_eq!(a.as_str().parse::<SandboxId>().unwrap(), a);
    }

    #[test]
    fn ids_reject_path_tricks() {
        for bad in [
            "", "..", "../etc", "a/b", "A", ".hidden", "-x", "a b", "a\0",
        ] {
            assert!(bad.parse::<SandboxId>().is_err(), "{bad:?} accepted");
        }
        assert!("x".repeat(49).parse::<SandboxId>().is_err());
        assert!("code-interpreter-v1".parse::<TemplateName>().is_ok());
    }

    #[test]
    fn ids_round_trip_through_json() {
        let id: SandboxId = "abc123".parse().unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"abc123\"");
        assert_eq!(serde_json::from_str::<SandboxId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SandboxId>("\"../x\"").is_err());
    }
}
