//! UTF-8 strings as MQTT defines them, sharing the read buffer.

use bytes::Bytes;
use bytestring::ByteString;
use std::fmt;
use std::ops::Deref;

/// Why a string is not a valid MQTT UTF-8 Encoded String.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StringError {
    /// Ill-formed UTF-8, including encoded surrogates U+D800..U+DFFF ([MQTT-1.5.4-1]).
    #[error("ill-formed UTF-8")]
    InvalidUtf8,
    /// The string contains U+0000 ([MQTT-1.5.4-2]).
    #[error("string contains U+0000")]
    NullCharacter,
    /// The string is longer than 65,535 bytes.
    #[error("string is longer than 65535 bytes")]
    TooLong,
}

/// A UTF-8 Encoded String (MQTT 5.0 section 1.5.4, 3.1.1 section 1.5.3): well-formed UTF-8,
/// no U+0000, at most 65,535 bytes.
///
/// A decoded string is a slice of the input buffer: no copy, no allocation. The control
/// characters U+0001..U+001F and U+007F..U+009F and Unicode non-characters, which the
/// specification says SHOULD NOT appear, are accepted; a zero-width no-break space
/// (U+FEFF) is kept as it is, never stripped ([MQTT-1.5.4-3]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MqttString(ByteString);

impl MqttString {
    /// The empty string.
    pub const fn empty() -> Self {
        Self(ByteString::from_static(""))
    }

    /// Validates a static string.
    pub fn from_static(s: &'static str) -> Result<Self, StringError> {
        Self::check(s.as_bytes())?;
        Ok(Self(ByteString::from_static(s)))
    }

    /// Validates a string, copying it.
    pub fn new(s: &str) -> Result<Self, StringError> {
        Self::check(s.as_bytes())?;
        Ok(Self(ByteString::from(s)))
    }

    /// Validates bytes without copying them.
    pub fn from_bytes(b: Bytes) -> Result<Self, StringError> {
        Self::from_bytes_inline(b)
    }

    /// [`MqttString::from_bytes`], inlined where a string is decoded: returned through
    /// memory from a call, the view is read back right after the callee wrote it, a
    /// store-forwarding stall.
    #[inline(always)]
    pub(crate) fn from_bytes_inline(b: Bytes) -> Result<Self, StringError> {
        Self::check(&b)?;
        ByteString::try_from(b)
            .map(Self)
            .map_err(|_| StringError::InvalidUtf8)
    }

    fn check(b: &[u8]) -> Result<(), StringError> {
        if b.len() > u16::MAX as usize {
            return Err(StringError::TooLong);
        }
        if has_byte(b, 0) {
            return Err(StringError::NullCharacter);
        }
        Ok(())
    }

    /// Bytes already known to be UTF-8 without U+0000 and short enough; `None` if not
    /// UTF-8 after all.
    #[inline]
    pub(crate) fn from_utf8_bytes(b: Bytes) -> Option<Self> {
        ByteString::try_from(b).ok().map(Self)
    }

    /// A copy in a buffer of its own. A decoded string is a view of its packet's buffer
    /// and keeps all of it alive: a client identifier kept for a session would keep the
    /// CONNECT's password and properties with it. Values kept long are better copied.
    pub fn compact(&self) -> Self {
        Self(ByteString::from(self.as_str()))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The bytes, sharing the buffer.
    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Deref for MqttString {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Hashes and compares as the text it holds, so a map keyed by `MqttString` is looked up
/// with a `&str`.
impl std::borrow::Borrow<str> for MqttString {
    fn borrow(&self) -> &str {
        self
    }
}

impl AsRef<str> for MqttString {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for MqttString {
    type Error = StringError;
    fn try_from(s: &str) -> Result<Self, StringError> {
        Self::new(s)
    }
}

impl TryFrom<String> for MqttString {
    type Error = StringError;
    fn try_from(s: String) -> Result<Self, StringError> {
        Self::check(s.as_bytes())?;
        Ok(Self(ByteString::from(s)))
    }
}

impl PartialEq<str> for MqttString {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for MqttString {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ors `f` of every byte of `b`, 16 bytes at a time in a form the compiler turns into
/// vector instructions. The tail is read as a last, overlapping block of 16 (an OR does not
/// mind bytes seen twice), so short strings take no scalar loop unless under 16 bytes.
#[inline(always)]
fn or_bytes(b: &[u8], f: impl Fn(u8) -> u8 + Copy) -> u8 {
    const W: usize = 16;
    #[inline(always)]
    fn block(acc: &mut [u8; W], c: &[u8; W], f: impl Fn(u8) -> u8) {
        for i in 0..W {
            acc[i] |= f(c[i]);
        }
    }
    if b.len() < W {
        return b.iter().fold(0, |a, &c| a | f(c));
    }
    let mut acc = [0u8; W];
    let mut chunks = b.chunks_exact(W);
    for c in &mut chunks {
        block(&mut acc, c.try_into().expect("16 bytes"), f);
    }
    if !chunks.remainder().is_empty() {
        block(&mut acc, b[b.len() - W..].try_into().expect("16 bytes"), f);
    }
    acc.iter().fold(0, |a, &x| a | x)
}

/// Whether `b` holds `x`.
#[inline]
pub(crate) fn has_byte(b: &[u8], x: u8) -> bool {
    or_bytes(b, |c| u8::from(c == x)) != 0
}

/// Classifies a topic name's bytes in one pass: `Some(ascii)` if they hold no U+0000 and
/// no wildcard (and whether they are all ASCII, which makes them valid UTF-8 without a
/// further check), `None` otherwise.
#[inline]
pub(crate) fn plain_topic_bytes(b: &[u8]) -> Option<bool> {
    let r = or_bytes(b, |c| {
        (c & 0x80) | u8::from((c == 0) | (c == b'+') | (c == b'#'))
    });
    (r & 1 == 0).then_some(r & 0x80 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block pass sees every byte, whatever the length and wherever the byte is
    /// (short strings, whole blocks, overlapping last blocks).
    #[test]
    fn block_pass_sees_every_byte() {
        for len in 0..70 {
            let plain = vec![b'a'; len];
            assert!(!has_byte(&plain, 0));
            assert_eq!(plain_topic_bytes(&plain), Some(true));
            for at in 0..len {
                for (x, topic) in [(0u8, None), (b'+', None), (b'#', None), (0xc3, Some(false))] {
                    let mut b = plain.clone();
                    b[at] = x;
                    assert!(has_byte(&b, x), "{len} {at} {x}");
                    assert_eq!(plain_topic_bytes(&b), topic, "{len} {at} {x}");
                }
            }
        }
    }

    /// A compacted string holds its own buffer: the packet's buffer it was a view of is
    /// not kept alive by it.
    #[test]
    fn compact_copies_out_of_the_packet() {
        let packet = Bytes::from(b"\x00\x05hello and the rest of a packet".to_vec());
        let view = MqttString::from_bytes(packet.slice(2..7)).unwrap();
        let kept = view.compact();
        assert_eq!(kept, view);
        assert_eq!(kept.as_str(), "hello");
        let range = packet.as_ptr_range();
        assert!(range.contains(&view.as_bytes().as_ptr()));
        assert!(!range.contains(&kept.as_bytes().as_ptr()));
        // The packet's buffer is shared by the view only, not by the copy: once both
        // the view and `packet` are gone, it is freed (`Bytes::is_unique` on the
        // packet tells whom it is shared with).
        drop(view);
        assert!(packet.is_unique());
        let filter = crate::TopicFilter::from_bytes(packet.slice(2..7)).unwrap();
        let kept_filter = filter.compact();
        drop(filter);
        assert!(packet.is_unique());
        assert_eq!(kept_filter.as_str(), "hello");
    }

    /// A compacted will shares nothing with the CONNECT it came in.
    #[test]
    fn a_compacted_will_keeps_nothing_of_its_packet() {
        let packet = Bytes::from(b"will/topicpayloadtypecorrkeyvalue".to_vec());
        let s = |r: std::ops::Range<usize>| MqttString::from_bytes(packet.slice(r)).unwrap();
        let mut will = crate::Will {
            topic: crate::TopicName::from_string(s(0..10)).unwrap(),
            payload: packet.slice(10..17),
            qos: crate::QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        };
        let p = will.properties.make_mut();
        p.content_type = Some(s(17..21));
        p.response_topic = Some(crate::TopicName::from_string(s(0..4)).unwrap());
        p.correlation_data = Some(packet.slice(21..25));
        p.user_properties.push((s(25..28), s(28..33)));
        let kept = will.compact();
        assert_eq!(kept, will);
        drop(will);
        assert!(
            packet.is_unique(),
            "the compacted will still shares the packet"
        );
    }
}
