//! The password file (argon2id hashes, checked off the core's thread) and the ACL file.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use mqtt_broker::{Access, Acl, Rule, Who};
use std::collections::BTreeMap;
use std::path::Path;

/// What an unknown user's password is checked against: a hash with the parameters
/// [`Passwords::set`] uses, so that the check costs the same.
const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1QKb2K9Fh4E1xHn0Wb7qvqkmyEoqMSkVb3hq8dn5oN8";

/// Users and their argon2id hashes, from a file of `user:hash` lines.
#[derive(Debug, Clone, Default)]
pub struct Passwords {
    users: BTreeMap<String, String>,
}

impl Passwords {
    /// Reads a password file; a missing file is an empty one (for `passwd` to create).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => anyhow::bail!("{}: {e}", path.display()),
        };
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses `user:hash` lines; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut users = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected `user:hash`", n + 1))?;
            PasswordHash::new(hash).map_err(|e| format!("line {}: bad hash: {e}", n + 1))?;
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Self { users })
    }

    /// Sets a user's password (argon2id with a random salt).
    pub fn set(&mut self, user: &str, password: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            !user.is_empty() && !user.contains(':'),
            "user names cannot be empty or hold ':'"
        );
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
            .to_string();
        self.users.insert(user.to_string(), hash);
        Ok(())
    }

    /// Removes a user.
    pub fn remove(&mut self, user: &str) -> bool {
        self.users.remove(user).is_some()
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        self.users
            .iter()
            .map(|(u, h)| format!("{u}:{h}\n"))
            .collect()
    }

    /// Whether `password` is the user's. Slow on purpose (argon2): call it off the core.
    /// Unknown users cost a hash too, so timing does not tell which users exist; argon2
    /// compares the computed hash with the stored one in constant time.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (DUMMY, false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        Argon2::default().verify_password(password, &parsed).is_ok() && known
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Reads an ACL file (see [`parse_acl`]); errors name the file.
pub fn load_acl(path: &Path) -> anyhow::Result<Acl> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    parse_acl(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Parses an ACL file: one rule per line, first match wins.
///
/// ```text
/// # allow|deny  publish|subscribe|both  any|anonymous|user:NAME|client:ID  FILTER
/// allow both  any        users/%u/#
/// deny  both  any        users/#
/// allow subscribe any    $SYS/#
/// default deny
/// ```
pub fn parse_acl(text: &str) -> Result<Acl, String> {
    let mut acl = Acl::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |m: &str| format!("line {}: {m}", n + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["default", d] => {
                acl.default_allow = match *d {
                    "allow" => true,
                    "deny" => false,
                    _ => return Err(at("expected `default allow` or `default deny`")),
                }
            }
            [decision, access, who, filter] => {
                let allow = match *decision {
                    "allow" => true,
                    "deny" => false,
                    _ => return Err(at("a rule starts with allow or deny")),
                };
                let access = match *access {
                    "publish" => Access::Publish,
                    "subscribe" => Access::Subscribe,
                    "both" => Access::Both,
                    _ => return Err(at("access is publish, subscribe or both")),
                };
                let who = match *who {
                    "any" => Who::Any,
                    "anonymous" => Who::Anonymous,
                    w => match w.split_once(':') {
                        Some(("user", u)) => Who::User(u.into()),
                        Some(("client", c)) => Who::Client(c.into()),
                        _ => return Err(at("who is any, anonymous, user:NAME or client:ID")),
                    },
                };
                mqtt_proto::TopicFilter::new(&filter.replace("%u", "u").replace("%c", "c"))
                    .map_err(|e| at(&format!("bad topic filter: {e}")))?;
                acl.rules.push(Rule {
                    allow,
                    who,
                    access,
                    filter: filter.to_string(),
                });
            }
            _ => {
                return Err(at(
                    "expected `ALLOW|DENY ACCESS WHO FILTER` or `default ...`",
                ))
            }
        }
    }
    Ok(acl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_round_trip() {
        let mut p = Passwords::default();
        p.set("ann", "secret").unwrap();
        let again = Passwords::parse(&p.to_text()).unwrap();
        assert!(again.verify("ann", b"secret"));
        assert!(!again.verify("ann", b"wrong"));
        assert!(!again.verify("bob", b"secret"));
        assert!(p.to_text().starts_with("ann:$argon2id$"));
        assert!(Passwords::parse("ann").is_err());
        assert!(Passwords::parse("ann:nothash").is_err());
    }

    #[test]
    fn unknown_users_cost_a_hash_too() {
        let mut p = Passwords::default();
        p.set("ann", "secret").unwrap();
        let real = PasswordHash::new(&p.users["ann"]).unwrap();
        let dummy = PasswordHash::new(DUMMY).unwrap();
        assert_eq!(
            (dummy.algorithm, dummy.version, &dummy.params),
            (real.algorithm, real.version, &real.params)
        );
        assert!(!p.verify("bob", b"secret"));
        assert!(!p.verify("", b""));
    }

    #[test]
    fn acl_file() {
        let acl = parse_acl(
            "# c\nallow both any users/%u/#\ndeny publish user:bob secret\ndefault deny\n",
        )
        .unwrap();
        assert!(!acl.default_allow);
        assert_eq!(acl.rules.len(), 2);
        assert!(acl.can_publish(Some("ann"), "c", "users/ann/x"));
        assert!(!acl.can_publish(Some("ann"), "c", "other"));
        let e = parse_acl("permit both any x").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        assert!(parse_acl("allow both any a/#/b").is_err());
    }
}
