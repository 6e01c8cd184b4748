//! Primitive data types of section 1.5: integers, Variable Byte Integers, strings and
//! binary data, read from a `Bytes` cursor (sharing the buffer) and written to `BytesMut`.

use crate::{DecodeError, MqttString, PacketType};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest value a Variable Byte Integer holds (four bytes).
pub const MAX_VAR_INT: u32 = 268_435_455;

/// A cursor over one packet's bytes. Every read checks the length first, so a short
/// packet is an error, never a panic.
pub(crate) struct Reader {
    pub(crate) buf: Bytes,
    pub(crate) packet: PacketType,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, packet: PacketType) -> Self {
        Self { buf, packet }
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated(self.packet))
        } else {
            Ok(())
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn var_int(&mut self) -> Result<u32, DecodeError> {
        match parse_var_int(&self.buf)? {
            Some((v, n)) => {
                self.buf.advance(n);
                Ok(v)
            }
            None => Err(DecodeError::Truncated(self.packet)),
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Binary Data: two-byte length, then the bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// UTF-8 Encoded String.
    pub(crate) fn string(&mut self) -> Result<MqttString, DecodeError> {
        let b = self.binary()?;
        MqttString::from_bytes(b).map_err(DecodeError::InvalidString)
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
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

/// Binary Data or a string: two-byte length, then the bytes. Lengths are checked before
/// anything is written.
pub(crate) fn put_binary(buf: &mut BytesMut, b: &[u8]) {
    debug_assert!(b.len() <= u16::MAX as usize);
    buf.put_u16(b.len() as u16);
    buf.put_slice(b);
}
