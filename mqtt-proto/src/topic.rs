//! Topic names and topic filters (section 4.7), and matching one against the other.

use crate::string::{MqttString, StringError};
use bytes::Bytes;
use std::fmt;
use std::ops::Deref;

/// Why a topic name or filter is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Not a valid UTF-8 Encoded String.
    #[error(transparent)]
    String(#[from] StringError),
    /// Topic names and filters have at least one character ([MQTT-4.7.3-1]).
    #[error("topic is empty")]
    Empty,
    /// A topic name contains `+` or `#` ([MQTT-4.7.0-1], 3.1.1 [MQTT-4.7.1-1]).
    #[error("topic name contains a wildcard")]
    WildcardInName,
    /// `#` is not the last character or not alone in its level ([MQTT-4.7.1-1],
    /// 3.1.1 [MQTT-4.7.1-2]).
    #[error("'#' must be the last character and alone in its level")]
    MultiLevelWildcard,
    /// `+` does not occupy a whole level ([MQTT-4.7.1-2], 3.1.1 [MQTT-4.7.1-3]).
    #[error("'+' must occupy a whole level")]
    SingleLevelWildcard,
    /// `$share/{name}/{filter}` with an empty or invalid share name or no filter
    /// ([MQTT-4.8.2-1], [MQTT-4.8.2-2]).
    #[error("malformed shared subscription")]
    SharedSubscription,
}

/// A Topic Name: what a PUBLISH is sent to. No wildcards, at least one character.
///
/// The one exception: a v5 PUBLISH that carries a Topic Alias may have an empty topic name;
/// [`TopicName::is_empty`] tells.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(MqttString);

impl TopicName {
    /// A copy in a buffer of its own, rather than a view of the packet it was decoded
    /// from (see [`MqttString::compact`]).
    pub fn compact(&self) -> Self {
        Self(self.0.compact())
    }

    /// Validates a topic name.
    pub fn new(s: &str) -> Result<Self, TopicError> {
        Self::from_string(MqttString::new(s)?)
    }

    /// Validates a topic name held in bytes, without copying.
    pub fn from_bytes(b: Bytes) -> Result<Self, TopicError> {
        Self::from_string(MqttString::from_bytes(b)?)
    }

    /// Validates a topic name.
    pub fn from_string(s: MqttString) -> Result<Self, TopicError> {
        if s.is_empty() {
            return Err(TopicError::Empty);
        }
        Self::allow_empty(s)
    }

    /// Like `from_string` but accepts the empty name a v5 Topic Alias allows.
    pub(crate) fn allow_empty(s: MqttString) -> Result<Self, TopicError> {
        let b = s.as_bytes();
        if crate::string::has_byte(b, b'+') | crate::string::has_byte(b, b'#') {
            return Err(TopicError::WildcardInName);
        }
        Ok(Self(s))
    }

    /// A name whose bytes were checked already (non-empty, no wildcard).
    #[inline]
    pub(crate) fn from_checked(s: MqttString) -> Self {
        Self(s)
    }

    /// The empty topic name of a PUBLISH that relies on a Topic Alias (MQTT 5.0).
    pub const fn empty() -> Self {
        Self(MqttString::empty())
    }

    /// The underlying string.
    pub fn as_mqtt_str(&self) -> &MqttString {
        &self.0
    }

    /// The topic as `&str`.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Deref for TopicName {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl TryFrom<&str> for TopicName {
    type Error = TopicError;
    fn try_from(s: &str) -> Result<Self, TopicError> {
        Self::new(s)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Topic Filter: what a SUBSCRIBE asks for, with `+` and `#` wildcards.
///
/// Shared subscriptions (`$share/{ShareName}/{filter}`) are checked for their form in every
/// protocol version: the share name is non-empty and holds no `/`, `+` or `#`, and a
/// filter follows it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(MqttString);

impl TopicFilter {
    /// Validates a topic filter.
    pub fn new(s: &str) -> Result<Self, TopicError> {
        Self::from_string(MqttString::new(s)?)
    }

    /// Validates a topic filter held in bytes, without copying.
    pub fn from_bytes(b: Bytes) -> Result<Self, TopicError> {
        Self::from_string(MqttString::from_bytes(b)?)
    }

    /// A copy in a buffer of its own, rather than a view of the packet it was decoded
    /// from (see [`MqttString::compact`]).
    pub fn compact(&self) -> Self {
        Self(self.0.compact())
    }

    /// Validates a topic filter.
    pub fn from_string(s: MqttString) -> Result<Self, TopicError> {
        if plain_filter_bytes(s.as_bytes()) {
            return Ok(Self(s));
        }
        if let Some(rest) = s.strip_prefix("$share/") {
            let (group, filter) = rest.split_once('/').ok_or(TopicError::SharedSubscription)?;
            if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
                return Err(TopicError::SharedSubscription);
            }
            check_filter(filter)?;
        } else {
            check_filter(&s)?;
        }
        Ok(Self(s))
    }

    /// Decodes a filter from the bytes of a packet: the checks of
    /// [`MqttString::from_bytes`] then [`TopicFilter::from_string`], with the same errors.
    #[inline]
    pub(crate) fn from_wire(b: Bytes) -> Result<Self, crate::DecodeError> {
        use crate::DecodeError::{InvalidString, InvalidTopicFilter};
        if plain_filter_bytes(&b) {
            // No U+0000 and a valid filter: only UTF-8 is left to check.
            return match MqttString::from_utf8_bytes(b) {
                Some(s) => Ok(Self(s)),
                None => Err(InvalidString(StringError::InvalidUtf8)),
            };
        }
        Self::from_string(MqttString::from_bytes(b).map_err(InvalidString)?)
            .map_err(InvalidTopicFilter)
    }

    /// The underlying string.
    pub fn as_mqtt_str(&self) -> &MqttString {
        &self.0
    }

    /// The filter as `&str`.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// True if the filter holds `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.0.contains(['+', '#'])
    }

    /// For `$share/{group}/{filter}`, the group and the filter.
    pub fn shared(&self) -> Option<(&str, &str)> {
        self.0.strip_prefix("$share/")?.split_once('/')
    }

    /// Whether this filter matches a topic name; see [`matches`]. A shared subscription
    /// matches with its inner filter.
    pub fn matches(&self, name: &TopicName) -> bool {
        match self.shared() {
            Some((_, filter)) => matches(filter, name),
            None => matches(&self.0, name),
        }
    }
}

/// Compares as the text it holds, so a map keyed by `TopicFilter` is looked up with a
/// `&str`.
impl std::borrow::Borrow<str> for TopicFilter {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// Whether `b` is certainly a valid filter that is not a shared subscription, with no
/// U+0000. The first and last characters are checked on their own, the ones between in
/// blocks of 16 the compiler turns into vector instructions, each byte against its
/// neighbours, read straight from `b` (the last block overlaps the one before). `false`
/// is not an error: the caller then runs the full checks, which find the error (or
/// accept a `$share/...` filter).
#[inline]
fn plain_filter_bytes(b: &[u8]) -> bool {
    const W: usize = 16;
    let n = b.len();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    // No U+0000 ([MQTT-1.5.4-2]); '+' and '#' take a whole level and '#' comes last
    // ([MQTT-4.7.1-1], [MQTT-4.7.1-2]).
    if first == b'$' || first == 0 || last == 0 {
        return false;
    }
    if n == 1 {
        return true;
    }
    if first == b'#' || (first == b'+' && b[1] != b'/') {
        return false;
    }
    if (last == b'+' || last == b'#') && b[n - 2] != b'/' {
        return false;
    }
    // A character with a neighbour on each side: bad if U+0000, '#' (not last), or '+'
    // not between two '/'.
    #[inline(always)]
    fn inner(prev: u8, c: u8, next: u8) -> u8 {
        u8::from((c == 0) | (c == b'#') | ((c == b'+') & ((prev != b'/') | (next != b'/'))))
    }
    if n - 2 < W {
        return (1..n - 1).all(|i| inner(b[i - 1], b[i], b[i + 1]) == 0);
    }
    // The characters `start..start + W`, with their neighbours.
    #[inline(always)]
    fn block(b: &[u8], start: usize) -> [u8; W] {
        let w: &[u8; W + 2] = b[start - 1..start + W + 1].try_into().expect("block");
        let mut bad = [0u8; W];
        for i in 0..W {
            bad[i] = inner(w[i], w[i + 1], w[i + 2]);
        }
        bad
    }
    let mut bad = [0u8; W];
    let mut start = 1;
    while start + W < n {
        let x = block(b, start);
        for i in 0..W {
            bad[i] |= x[i];
        }
        start += W;
    }
    if start < n - 1 {
        let x = block(b, n - 1 - W);
        for i in 0..W {
            bad[i] |= x[i];
        }
    }
    bad.iter().fold(0, |a, &x| a | x) == 0
}

fn check_filter(f: &str) -> Result<(), TopicError> {
    let b = f.as_bytes();
    if b.is_empty() {
        return Err(TopicError::Empty);
    }
    // Only the wildcards need looking at: '#' is last and alone in its level, '+' is
    // alone in its level.
    for i in memchr::memchr2_iter(b'+', b'#', b) {
        let after_separator = i == 0 || b[i - 1] == b'/';
        if b[i] == b'#' {
            if i + 1 != b.len() || !after_separator {
                return Err(TopicError::MultiLevelWildcard);
            }
        } else if !after_separator || b.get(i + 1).is_some_and(|&n| n != b'/') {
            return Err(TopicError::SingleLevelWildcard);
        }
    }
    Ok(())
}

impl Deref for TopicFilter {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl TryFrom<&str> for TopicFilter {
    type Error = TopicError;
    fn try_from(s: &str) -> Result<Self, TopicError> {
        Self::new(s)
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the topic filter `filter` matches the topic name `name` (section 4.7).
///
/// `+` matches exactly one level (possibly empty), `#` matches the parent level and any
/// number of levels below it. A filter starting with a wildcard does not match a topic
/// name starting with `$` ([MQTT-4.7.2-1]). Matching is byte for byte, with no
/// normalisation ([MQTT-4.7.3-4]). The inputs are assumed valid; use [`TopicFilter`]
/// and [`TopicName`] to check them.
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut n = name.split('/');
    loop {
        match (f.next(), n.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(filter: &str, name: &str) -> bool {
        TopicFilter::new(filter)
            .unwrap()
            .matches(&TopicName::new(name).unwrap())
    }

    #[test]
    fn multi_level_wildcard() {
        // 3.1.1 [MQTT-4.7.1-2], 5.0 [MQTT-4.7.1-1]: '#' matches the parent and any
        // number of levels below.
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
        assert!(m(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(m("sport/#", "sport"));
        assert!(m("#", "a/b/c"));
        assert!(m("#", "/"));
        assert!(!m("sport/tennis/#", "sport/football"));
        assert!(TopicFilter::new("sport/tennis#").is_err());
        assert!(TopicFilter::new("sport/tennis/#/ranking").is_err());
    }

    #[test]
    fn single_level_wildcard() {
        // 3.1.1 [MQTT-4.7.1-3], 5.0 [MQTT-4.7.1-2]: '+' is one whole level.
        assert!(m("sport/tennis/+", "sport/tennis/player1"));
        assert!(!m("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!m("sport/+", "sport"));
        assert!(m("sport/+", "sport/"));
        assert!(m("+/+", "/finance"));
        assert!(m("/+", "/finance"));
        assert!(!m("+", "/finance"));
        assert!(m("+/tennis/#", "sport/tennis/x"));
        assert!(TopicFilter::new("sport+").is_err());
        assert!(TopicFilter::new("+x/a").is_err());
        assert!(TopicFilter::new("+/+/#").is_ok());
    }

    #[test]
    fn dollar_topics_and_leading_wildcards() {
        // [MQTT-4.7.2-1]
        assert!(!m("#", "$SYS/broker/uptime"));
        assert!(!m("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(m("$SYS/#", "$SYS/broker/uptime"));
        assert!(m("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(m("a/#", "a/$b"));
    }

    #[test]
    fn matching_is_exact() {
        // [MQTT-4.7.3-4]: no case folding or normalisation; levels may be empty.
        assert!(!m("ACCOUNTS", "Accounts"));
        assert!(!m("a/b", "a/b/"));
        assert!(m("a//b", "a//b"));
        assert!(!m("caf\u{e9}", "cafe\u{301}"));
    }

    #[test]
    fn names_and_filters_are_not_empty() {
        // [MQTT-4.7.3-1], [MQTT-4.7.3-2] no U+0000, 3.1.1 [MQTT-4.7.3-3] at most 65,535
        // bytes.
        assert_eq!(TopicName::new(""), Err(TopicError::Empty));
        assert_eq!(TopicFilter::new("").unwrap_err(), TopicError::Empty);
        assert_eq!(
            TopicName::new("a\0b"),
            Err(TopicError::String(StringError::NullCharacter))
        );
        let long = "a".repeat(65_536);
        assert_eq!(
            TopicName::new(&long),
            Err(TopicError::String(StringError::TooLong))
        );
        assert!(TopicName::new(&long[1..]).is_ok());
    }

    /// The block check of filters agrees with the full one: every string over an alphabet
    /// of the bytes that matter, up to 6 bytes, and longer ones that cross blocks.
    #[test]
    fn block_filter_check_agrees_with_the_full_check() {
        fn full(b: &[u8]) -> bool {
            let s = std::str::from_utf8(b).unwrap();
            !b.is_empty() && !b.contains(&0) && check_filter(s).is_ok()
        }
        fn agree(b: &[u8]) {
            let fast = plain_filter_bytes(b);
            assert!(
                !fast || full(b),
                "{:?} accepted",
                String::from_utf8_lossy(b)
            );
            if b.first() != Some(&b'$') {
                assert_eq!(fast, full(b), "{:?}", String::from_utf8_lossy(b));
            }
        }
        const ALPHABET: [u8; 5] = [b'a', b'/', b'+', b'#', 0];
        let mut b = Vec::new();
        for len in 0..=6u32 {
            for mut k in 0..ALPHABET.len().pow(len) {
                b.clear();
                for _ in 0..len {
                    b.push(ALPHABET[k % ALPHABET.len()]);
                    k /= ALPHABET.len();
                }
                agree(&b);
            }
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 72) as usize;
            b.clear();
            let mut y = x;
            for i in 0..len {
                // Mostly plain levels, with a separator or a wildcard here and there.
                let pick = (y >> (i % 60)) % 23;
                b.push(match pick {
                    0..=2 => b'/',
                    3 => b'+',
                    4 => b'#',
                    5 if i % 7 == 0 => 0,
                    _ => b'a',
                });
                y = y.rotate_left(5) ^ x;
            }
            agree(&b);
        }
        // Valid filters of every length up to 70, from levels.
        for seed in 0..5000u64 {
            let mut y = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut levels = Vec::new();
            while levels.iter().map(|l: &&str| l.len() + 1).sum::<usize>() < (seed % 71) as usize {
                y ^= y << 13;
                y ^= y >> 7;
                y ^= y << 17;
                levels.push(["+", "", "a", "room-12", "+", "building"][(y % 6) as usize]);
            }
            if seed % 3 == 0 {
                levels.push("#");
            }
            let f = levels.join("/");
            if !f.is_empty() {
                assert!(full(f.as_bytes()), "{f}");
                agree(f.as_bytes());
            }
        }
        agree(b"sensors/building-1/+/room-1/#");
        assert!(plain_filter_bytes(b"sensors/building-1/+/room-1/#"));
    }

    #[test]
    fn shared_subscriptions() {
        // [MQTT-4.8.2-1], [MQTT-4.8.2-2]
        let f = TopicFilter::new("$share/group/sport/+").unwrap();
        assert_eq!(f.shared(), Some(("group", "sport/+")));
        assert!(f.matches(&TopicName::new("sport/tennis").unwrap()));
        assert!(TopicFilter::new("$share/g/#").is_ok());
        for bad in [
            "$share//a",
            "$share/g",
            "$share/g/",
            "$share/g+/a",
            "$share/#/a",
        ] {
            assert_eq!(
                TopicFilter::new(bad).unwrap_err(),
                TopicError::SharedSubscription,
                "{bad}"
            );
        }
        assert_eq!(
            TopicFilter::new("$share/g/a#").unwrap_err(),
            TopicError::MultiLevelWildcard
        );
        assert_eq!(TopicFilter::new("$shared/x").unwrap().shared(), None);
    }
}
