//! Authorization: ordered allow/deny rules per user, client id and topic filter, checked
//! synchronously inside the core.

use mqtt_proto::matches;

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Publishing to a topic.
    Publish,
    /// Subscribing to a filter.
    Subscribe,
    /// Both.
    Both,
}

/// Who a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// Everyone.
    Any,
    /// Clients authenticated with this user name.
    User(String),
    /// The client with this client id.
    Client(String),
    /// Clients without a user name.
    Anonymous,
}

/// One rule: `allow` or deny `access` to topics matching `filter` for `who`. In the
/// filter, `%u` stands for the user name and `%c` for the client id; a rule with `%u`
/// does not apply to a client without a user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Allow or deny.
    pub allow: bool,
    /// Who.
    pub who: Who,
    /// Publish, subscribe or both.
    pub access: Access,
    /// The topic filter pattern.
    pub filter: String,
}

/// Ordered rules; the first that applies decides, else `default_allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    /// The rules, in order.
    pub rules: Vec<Rule>,
    /// The decision when no rule applies. Default true.
    pub default_allow: bool,
}

impl Default for Acl {
    fn default() -> Self {
        Self {
            rules: vec![],
            default_allow: true,
        }
    }
}

impl Acl {
    /// May this client publish to `topic`?
    pub fn can_publish(&self, user: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.decide(user, client_id, Access::Publish, |f| matches(f, topic))
    }

    /// May this client subscribe to `filter` (every topic it can match must be allowed)?
    pub fn can_subscribe(&self, user: Option<&str>, client_id: &str, filter: &str) -> bool {
        let filter = match filter.strip_prefix("$share/") {
            Some(rest) => rest.split_once('/').map_or(rest, |(_, f)| f),
            None => filter,
        };
        self.decide(user, client_id, Access::Subscribe, |f| covers(f, filter))
    }

    fn decide(
        &self,
        user: Option<&str>,
        client_id: &str,
        access: Access,
        applies: impl Fn(&str) -> bool,
    ) -> bool {
        for r in &self.rules {
            if r.access != Access::Both && r.access != access {
                continue;
            }
            let who = match &r.who {
                Who::Any => true,
                Who::User(u) => user == Some(u.as_str()),
                Who::Client(c) => c == client_id,
                Who::Anonymous => user.is_none(),
            };
            if !who {
                continue;
            }
            if r.filter.contains("%u") && user.is_none() {
                continue;
            }
            let f = r
                .filter
                .replace("%u", user.unwrap_or(""))
                .replace("%c", client_id);
            if applies(&f) {
                return r.allow;
            }
        }
        self.default_allow
    }
}

/// Whether every topic matched by `filter` is matched by `pattern`.
pub fn covers(pattern: &str, filter: &str) -> bool {
    if filter.starts_with('$') && (pattern.starts_with('+') || pattern.starts_with('#')) {
        return false;
    }
    let mut p = pattern.split('/');
    let mut f = filter.split('/');
    loop {
        match (p.next(), f.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(a), Some(b)) if a == b && b != "+" && b != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_filters() {
        assert!(covers("#", "a/+/#"));
        assert!(covers("a/#", "a/b"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/+", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("#", "$SYS/#"));
        assert!(covers("$SYS/#", "$SYS/broker/+"));
    }

    #[test]
    fn first_rule_wins_with_substitution() {
        let acl = Acl {
            rules: vec![
                Rule {
                    allow: true,
                    who: Who::Any,
                    access: Access::Both,
                    filter: "users/%u/#".into(),
                },
                Rule {
                    allow: false,
                    who: Who::Any,
                    access: Access::Both,
                    filter: "users/#".into(),
                },
                Rule {
                    allow: false,
                    who: Who::Any,
                    access: Access::Publish,
                    filter: "secret".into(),
                },
            ],
            default_allow: true,
        };
        assert!(acl.can_publish(Some("ann"), "c", "users/ann/x"));
        assert!(!acl.can_publish(Some("ann"), "c", "users/bob/x"));
        assert!(!acl.can_publish(None, "c", "users/ann/x"));
        assert!(!acl.can_publish(Some("ann"), "c", "secret"));
        assert!(acl.can_subscribe(Some("ann"), "c", "secret"));
        assert!(acl.can_subscribe(Some("ann"), "c", "users/ann/+"));
        assert!(!acl.can_subscribe(Some("ann"), "c", "users/+/x"));
        assert!(!acl.can_subscribe(Some("ann"), "c", "$share/g/users/#"));
        assert!(acl.can_publish(Some("ann"), "c", "other"));
    }
}
