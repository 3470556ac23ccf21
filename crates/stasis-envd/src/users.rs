//! Users and groups from the sandbox's `/etc/passwd` and `/etc/group`.
//!
//! Parsed directly (no NSS) so lookups behave the same in any rootfs and need no
//! dynamically loaded modules inside a checkpointed process.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A resolved user: who processes run as and whose home relative paths start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (primary included).
    pub groups: Vec<u32>,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: String,
}

/// Why a user could not be resolved.
#[derive(Debug, Error)]
pub enum UserError {
    /// No such user in the passwd file.
    #[error("invalid username: '{0}'")]
    Unknown(String),
    /// The passwd or group file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Where the account files live (`/etc` in a sandbox).
#[derive(Debug, Clone)]
pub struct Accounts {
    etc: PathBuf,
}

impl Accounts {
    /// Accounts read from `etc/passwd` and `etc/group`.
    pub fn new(etc: impl Into<PathBuf>) -> Self {
        Self { etc: etc.into() }
    }

    fn read(&self, file: &str) -> Result<String, UserError> {
        let path = self.etc.join(file);
        std::fs::read_to_string(&path).map_err(|source| UserError::Read { path, source })
    }

    /// Looks a user up by name.
    pub fn lookup(&self, name: &str) -> Result<User, UserError> {
        let passwd = self.read("passwd")?;
        let entry = parse_passwd(&passwd)
            .find(|p| p.name == name)
            .ok_or_else(|| UserError::Unknown(name.to_string()))?;
        let group = self.read("group").unwrap_or_default();
        let mut groups = vec![entry.gid];
        for g in parse_group(&group) {
            if g.members.contains(&name) && !groups.contains(&g.gid) {
                groups.push(g.gid);
            }
        }
        Ok(User {
            name: entry.name.to_string(),
            uid: entry.uid,
            gid: entry.gid,
            groups,
            home: PathBuf::from(if entry.home.is_empty() {
                "/"
            } else {
                entry.home
            }),
            shell: if entry.shell.is_empty() {
                "/bin/sh".to_string()
            } else {
                entry.shell.to_string()
            },
        })
    }

    /// Resolves `name`, or, when it does not exist, `root` (used for the default user).
    pub fn lookup_or_root(&self, name: &str) -> Result<User, UserError> {
        match self.lookup(name) {
            Err(UserError::Unknown(_)) if name != "root" => {
                self.lookup("root").or_else(|_| Ok(root_fallback()))
            }
            Err(UserError::Unknown(_)) => Ok(root_fallback()),
            other => other,
        }
    }

    /// A uid → name and gid → name snapshot for listing many entries.
    pub fn names(&self) -> IdNames {
        let mut names = IdNames::default();
        if let Ok(p) = self.read("passwd") {
            for e in parse_passwd(&p) {
                names
                    .users
                    .entry(e.uid)
                    .or_insert_with(|| e.name.to_string());
            }
        }
        if let Ok(g) = self.read("group") {
            for e in parse_group(&g) {
                names
                    .groups
                    .entry(e.gid)
                    .or_insert_with(|| e.name.to_string());
            }
        }
        names
    }

    /// The directory holding the account files.
    pub fn etc(&self) -> &Path {
        &self.etc
    }
}

fn root_fallback() -> User {
    User {
        name: "root".into(),
        uid: 0,
        gid: 0,
        groups: vec![0],
        home: PathBuf::from("/root"),
        shell: "/bin/sh".into(),
    }
}

/// Id → name maps.
#[derive(Debug, Default, Clone)]
pub struct IdNames {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl IdNames {
    /// The user name of `uid`, or the number.
    pub fn user(&self, uid: u32) -> String {
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    /// The group name of `gid`, or the number.
    pub fn group(&self, gid: u32) -> String {
        self.groups
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
    shell: &'a str,
}

fn parse_passwd(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if line.starts_with('#') || f.len() < 7 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
            shell: f[6],
        })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn parse_group(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if line.starts_with('#') || f.len() < 4 {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_accounts_and_supplementary_groups() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\n# comment\nbroken\nuser:x:1000:1000::/home/user:/bin/bash\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("group"),
            "root:x:0:\nsudo:x:27:user,other\nuser:x:1000:\ndocker:x:999:user\n",
        )
        .unwrap();
        let acc = Accounts::new(dir.path());
        let u = acc.lookup("user").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.groups, vec![1000, 27, 999]);
        assert_eq!(u.home, PathBuf::from("/home/user"));
        assert!(matches!(acc.lookup("nobody"), Err(UserError::Unknown(n)) if n == "nobody"));
        assert_eq!(acc.lookup_or_root("nobody").unwrap().uid, 0);
        let names = acc.names();
        assert_eq!(names.user(1000), "user");
        assert_eq!(names.group(27), "sudo");
        assert_eq!(names.user(4242), "4242");
    }
}
