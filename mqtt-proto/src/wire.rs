//! Primitive data types of section 1.5: integers, Variable Byte Integers, strings and
//! binary data, read from a `Bytes` cursor (sharing the buffer) and written to `BytesMut`.

use crate::{DecodeError, MqttString, PacketType};
use bytes::{Bytes, BytesMut};

/// Appending to a `BytesMut` through the inlined `BytesMut::extend_from_slice`.
/// `bytes::BufMut`'s `put_u8`, `put_u16` and `put_slice` end in a call to
/// `BytesMut::put_slice`, which is not inlined across crates: one function call per field.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_slice(&mut self, b: &[u8]);
}

impl Put for BytesMut {
    #[inline(always)]
    fn put_u8(&mut self, v: u8) {
        self.extend_from_slice(&[v]);
    }

    #[inline(always)]
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }

    #[inline(always)]
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }

    #[inline(always)]
    fn put_slice(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

/// Largest value a Variable Byte Integer holds (four bytes).
pub const MAX_VAR_INT: u32 = 268_435_455;

/// A cursor over one packet's body. Every read checks the length first, so a short
/// packet is an error, never a panic.
///
/// The body is borrowed and never changed: a field is a `slice` of it (one reference-count
/// increment, no copy), and fixed-size fields and bytes compared in place take none. The
/// caller still holds the whole body when decoding fails, to put it back.
pub(crate) struct Reader<'a> {
    body: &'a Bytes,
    pos: usize,
    end: usize,
    pub(crate) packet: PacketType,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a Bytes, packet: PacketType) -> Self {
        Self {
            body,
            pos: 0,
            end: body.len(),
            packet,
        }
    }

    #[inline]
    fn truncated(&self) -> DecodeError {
        DecodeError::Truncated(self.packet)
    }

    /// The next `n` bytes, borrowed, and the cursor moved past them.
    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let body: &'a [u8] = self.body;
        match body.get(self.pos..self.end).and_then(|b| b.get(..n)) {
            Some(b) => {
                self.pos += n;
                Ok(b)
            }
            None => Err(self.truncated()),
        }
    }

    /// The next byte, not consumed.
    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        if self.pos < self.end {
            self.body.get(self.pos).copied()
        } else {
            None
        }
    }

    #[inline]
    pub(crate) fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.bytes(n).map(|_| ())
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn var_int(&mut self) -> Result<u32, DecodeError> {
        match parse_var_int(&self.body[self.pos..self.end])? {
            Some((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            None => Err(self.truncated()),
        }
    }

    /// The next `n` bytes as a view of the body.
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.skip(n)?;
        Ok(self.body.slice(start..start + n))
    }

    /// The next `n` bytes as a cursor of their own (a property block).
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        let start = self.pos;
        self.skip(n)?;
        Ok(Reader {
            body: self.body,
            pos: start,
            end: start + n,
            packet: self.packet,
        })
    }

    /// How many fields of Binary Data each followed by `extra` bytes the rest holds, up to
    /// 256: the capacity for a list (SUBSCRIBE, UNSUBSCRIBE), found without reading the
    /// fields. A malformed rest ends the count early, and reading the fields reports it;
    /// the bound keeps a large packet from reserving much before it is checked.
    pub(crate) fn count_binary(&self, extra: usize) -> usize {
        let rest = &self.body[self.pos..self.end];
        let (mut at, mut n) = (0, 0);
        while n < 256 {
            let Some(len) = rest.get(at..at + 2) else {
                break;
            };
            at += 2 + usize::from(u16::from_be_bytes([len[0], len[1]])) + extra;
            n += 1;
        }
        n
    }

    /// Binary Data: two-byte length, then the bytes.
    #[inline]
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// Binary Data, borrowed.
    #[inline]
    pub(crate) fn binary_ref(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.bytes(n)
    }

    /// UTF-8 Encoded String.
    #[inline]
    pub(crate) fn string(&mut self) -> Result<MqttString, DecodeError> {
        let b = self.binary()?;
        MqttString::from_bytes_inline(b).map_err(DecodeError::InvalidString)
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> Bytes {
        let start = self.pos;
        self.pos = self.end;
        self.body.slice(start..self.end)
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.packet))
        }
    }
}

/// Parses a Variable Byte Integer at the start of `b`: `Ok(None)` if `b` ends before it
/// does, the value and its length otherwise. Longer than four bytes or not in its shortest
/// form ([MQTT-1.5.5-1]) is an error.
pub(crate) fn parse_var_int(b: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&byte) = b.get(i) else {
            return Ok(None);
        };
        if i > 0 && byte == 0 {
            return Err(DecodeError::VarIntNotMinimal);
        }
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::VarIntTooLong)
}

/// Encoded length of a Variable Byte Integer.
pub(crate) const fn var_int_len(v: usize) -> usize {
    if v < 128 {
        1
    } else if v < 16_384 {
        2
    } else if v < 2_097_152 {
        3
    } else {
        4
    }
}

#[inline]
pub(crate) fn put_var_int(buf: &mut BytesMut, mut v: usize) {
    debug_assert!(v <= MAX_VAR_INT as usize);
    loop {
        let mut byte = (v & 0x7f) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if v == 0 {
            break;
        }
    }
}

/// Up to `N` bytes of fixed-size fields gathered on the stack, to be written to a
/// `BytesMut` in one copy rather than one capacity check and copy per field.
pub(crate) struct Head<const N: usize> {
    b: [u8; N],
    n: usize,
}

impl<const N: usize> Head<N> {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Self { b: [0; N], n: 0 }
    }

    #[inline(always)]
    pub(crate) fn u8(&mut self, v: u8) {
        self.b[self.n] = v;
        self.n += 1;
    }

    #[inline(always)]
    pub(crate) fn u16(&mut self, v: u16) {
        self.b[self.n..self.n + 2].copy_from_slice(&v.to_be_bytes());
        self.n += 2;
    }

    #[inline(always)]
    pub(crate) fn var_int(&mut self, mut v: usize) {
        debug_assert!(v <= MAX_VAR_INT as usize);
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.u8(byte);
                break;
            }
            self.u8(byte | 0x80);
        }
    }

    #[inline(always)]
    pub(crate) fn put(&self, buf: &mut BytesMut) {
        buf.extend_from_slice(&self.b[..self.n]);
    }
}

/// Binary Data or a string: two-byte length, then the bytes. Lengths are checked before
/// anything is written.
#[inline]
pub(crate) fn put_binary(buf: &mut BytesMut, b: &[u8]) {
    debug_assert!(b.len() <= u16::MAX as usize);
    buf.put_u16(b.len() as u16);
    buf.put_slice(b);
}
