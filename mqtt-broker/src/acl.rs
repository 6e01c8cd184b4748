//! Authorization: ordered allow/deny rules per user, client id and topic filter, checked
//! synchronously inside the core.

use std::borrow::Cow;

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
///
/// A level holding `%u` or `%c` is matched literally, as one level: a user name or client
/// id with `+` or `#` is not a wildcard, and one with `/` matches no level. (Otherwise a
/// client calling itself `#` would turn `allow both any clients/%c/#` into access to every
/// client's topics, and one calling itself `alice/x` would reach into `clients/alice/`.)
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
        self.decide(user, client_id, Access::Publish, |p| {
            pattern_matches(p, topic)
        })
    }

    /// May this client subscribe to `filter`? The first rule whose filter covers every
    /// topic `filter` can match decides. A wildcard filter that no rule covers whole
    /// gets `default`; the messages it then matches are checked topic by topic
    /// ([`can_receive`](Self::can_receive)), so a rule denying part of it still holds.
    pub fn can_subscribe(&self, user: Option<&str>, client_id: &str, filter: &str) -> bool {
        let filter = match filter.strip_prefix("$share/") {
            Some(rest) => rest.split_once('/').map_or(rest, |(_, f)| f),
            None => filter,
        };
        self.decide(user, client_id, Access::Subscribe, |p| {
            pattern_covers(p, filter)
        })
    }

    /// May this client receive a message on `topic` through a subscription it holds? The
    /// subscribe rules decide, applied to the topic itself: a wildcard subscription,
    /// granted because no rule denies the whole of its filter, still receives nothing on
    /// a topic a rule denies it. A topic no deny rule can match
    /// ([`may_deny_receive`](Self::may_deny_receive)) is allowed without more work.
    pub fn can_receive(&self, user: Option<&str>, client_id: &str, topic: &str) -> bool {
        !self.may_deny_receive(topic)
            || self.decide(user, client_id, Access::Subscribe, |p| {
                pattern_matches(p, topic)
            })
    }

    /// Whether a rule denying subscriptions may apply to `topic`, for some client. When
    /// not, every client holding a subscription that matches `topic` may receive it, and
    /// [`can_receive`](Self::can_receive) need not be asked. It allocates nothing: a
    /// level holding `%u` or `%c` counts as any level.
    ///
    /// A granted subscription's topics never reach `default deny`: it was granted by an
    /// `allow` rule covering its whole filter, which matches every topic the filter
    /// does. So only the `deny` rules decide here.
    pub fn may_deny_receive(&self, topic: &str) -> bool {
        self.rules
            .iter()
            .any(|r| !r.allow && r.access != Access::Publish && loosely_matches(&r.filter, topic))
    }

    fn decide(
        &self,
        user: Option<&str>,
        client_id: &str,
        access: Access,
        applies: impl Fn(&[Level]) -> bool,
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
            if applies(&levels(&r.filter, user.unwrap_or(""), client_id)) {
                return r.allow;
            }
        }
        self.default_allow
    }
}

/// One level of a rule's filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level<'a> {
    /// `+`.
    Plus,
    /// `#`.
    Hash,
    /// Anything else, with `%u` and `%c` replaced: matched literally.
    Literal(Cow<'a, str>),
}

/// The levels of `filter`, with `%u` and `%c` replaced inside their level.
fn levels<'a>(filter: &'a str, user: &str, client_id: &str) -> Vec<Level<'a>> {
    filter
        .split('/')
        .map(|l| match l {
            "+" => Level::Plus,
            "#" => Level::Hash,
            l if l.contains('%') => {
                Level::Literal(l.replace("%u", user).replace("%c", client_id).into())
            }
            l => Level::Literal(l.into()),
        })
        .collect()
}

/// A leading wildcard does not match a topic starting with `$` ([MQTT-4.7.2-1]).
fn dollar_excluded(pattern: &[Level], topic: &str) -> bool {
    topic.starts_with('$') && matches!(pattern.first(), Some(Level::Plus | Level::Hash))
}

/// Whether `pattern` matches the topic name `topic`.
fn pattern_matches(pattern: &[Level], topic: &str) -> bool {
    if dollar_excluded(pattern, topic) {
        return false;
    }
    let mut t = topic.split('/');
    for level in pattern {
        match (level, t.next()) {
            (Level::Hash, _) => return true,
            (Level::Plus, Some(_)) => {}
            (Level::Literal(l), Some(x)) if l == x => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

/// Whether the rule filter `pattern` may match `topic` for some user name and client id:
/// a level holding `%` matches any level.
fn loosely_matches(pattern: &str, topic: &str) -> bool {
    if topic.starts_with('$') && matches!(pattern.split('/').next(), Some("+" | "#")) {
        return false;
    }
    let (mut p, mut t) = (pattern.split('/'), topic.split('/'));
    loop {
        match (p.next(), t.next()) {
            (Some("#"), _) | (None, None) => return true,
            (Some(l), Some(x)) if l == "+" || l == x || l.contains('%') => {}
            _ => return false,
        }
    }
}

/// Whether every topic matched by the filter `filter` is matched by `pattern`.
fn pattern_covers(pattern: &[Level], filter: &str) -> bool {
    if dollar_excluded(pattern, filter) {
        return false;
    }
    let mut f = filter.split('/');
    for level in pattern {
        match (level, f.next()) {
            (Level::Hash, _) => return true,
            (Level::Plus, Some(x)) if x != "#" => {}
            (Level::Literal(l), Some(x)) if l == x && x != "+" && x != "#" => {}
            _ => return false,
        }
    }
    f.next().is_none()
}

/// Whether every topic matched by `filter` is matched by `pattern`.
pub fn covers(pattern: &str, filter: &str) -> bool {
    pattern_covers(&levels(pattern, "%u", "%c"), filter)
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
    fn wildcard_subscriptions_receive_only_allowed_topics() {
        let acl = Acl {
            rules: vec![
                Rule {
                    allow: false,
                    who: Who::Any,
                    access: Access::Subscribe,
                    filter: "test/nosubscribe".into(),
                },
                Rule {
                    allow: false,
                    who: Who::Any,
                    access: Access::Both,
                    filter: "private/%c/#".into(),
                },
            ],
            default_allow: true,
        };
        // Granted: no rule covers the whole filter.
        for f in ["test/+", "test/#", "+/nosubscribe", "#"] {
            assert!(acl.can_subscribe(None, "c", f), "{f}");
        }
        assert!(!acl.can_subscribe(None, "c", "test/nosubscribe"));
        assert!(!acl.can_subscribe(None, "c", "$share/g/test/nosubscribe"));
        // What those subscriptions receive.
        assert!(acl.may_deny_receive("test/nosubscribe"));
        assert!(!acl.can_receive(None, "c", "test/nosubscribe"));
        assert!(!acl.may_deny_receive("test/other"));
        assert!(acl.can_receive(None, "c", "test/other"));
        // `%c` counts as any level for the quick check; the full check substitutes it.
        assert!(acl.may_deny_receive("private/x/y"));
        assert!(!acl.can_receive(None, "x", "private/x/y"));
        assert!(acl.can_receive(None, "other", "private/x/y"));
        // A rule starting with a wildcard does not reach `$` topics ([MQTT-4.7.2-1]).
        assert!(!loosely_matches("#", "$SYS/broker/uptime"));
        assert!(loosely_matches("a/#", "a"));
        assert!(!loosely_matches("a/+", "a"));
        assert!(!loosely_matches("a/b", "a/b/c"));
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

    #[test]
    fn substituted_names_are_one_literal_level() {
        let acl = Acl {
            rules: vec![
                Rule {
                    allow: true,
                    who: Who::Any,
                    access: Access::Both,
                    filter: "clients/%c/#".into(),
                },
                Rule {
                    allow: true,
                    who: Who::Any,
                    access: Access::Both,
                    filter: "users/%u".into(),
                },
                Rule {
                    allow: true,
                    who: Who::Any,
                    access: Access::Both,
                    filter: "in/pre-%c-post/x".into(),
                },
            ],
            default_allow: false,
        };
        // As meant.
        assert!(acl.can_publish(None, "dev1", "clients/dev1"));
        assert!(acl.can_publish(None, "dev1", "clients/dev1/a/b"));
        assert!(acl.can_subscribe(None, "dev1", "clients/dev1/+"));
        assert!(acl.can_publish(Some("ann"), "c", "users/ann"));
        assert!(acl.can_publish(None, "dev1", "in/pre-dev1-post/x"));
        assert!(!acl.can_publish(None, "dev1", "clients/dev2/a"));
        // Wildcards in a client id or user name are not wildcards.
        for id in ["#", "+", "dev+", "x#"] {
            assert!(!acl.can_publish(None, id, "clients/dev2/a"), "{id}");
            assert!(!acl.can_subscribe(None, id, "clients/+/a"), "{id}");
            assert!(!acl.can_subscribe(None, id, "clients/#"), "{id}");
            assert!(!acl.can_subscribe(None, id, "clients/+"), "{id}");
        }
        assert!(!acl.can_publish(Some("+"), "c", "users/ann"));
        assert!(!acl.can_subscribe(Some("+"), "c", "users/+"));
        assert!(!acl.can_subscribe(Some("#"), "c", "users/#"));
        // A `/` does not reach into another client's levels.
        assert!(!acl.can_publish(None, "dev1/x", "clients/dev1/x/a"));
        assert!(!acl.can_subscribe(None, "dev1/x", "clients/dev1/x/#"));
        assert!(!acl.can_publish(Some("ann/x"), "c", "users/ann/x"));
        assert!(!acl.can_publish(None, "a/in/b", "in/pre-a/in/b-post/x"));
    }
}
