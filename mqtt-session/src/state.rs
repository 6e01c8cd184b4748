//! The session state that outlives a connection, as a plain value a broker can park,
//! hand over on takeover, or persist.

use mqtt_proto::{PacketId, Publish, QoS};
use std::collections::{BTreeSet, VecDeque};

/// One outgoing QoS 1/2 message that was sent and is not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
// Most entries are PUBLISHes; boxing them would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
pub enum Inflight {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2). Its `packet_id` is set.
    Publish(Publish),
    /// QoS 2: PUBREC received and PUBREL sent; waiting for PUBCOMP.
    Released(PacketId),
}

impl Inflight {
    /// The packet identifier.
    pub fn packet_id(&self) -> PacketId {
        match self {
            Inflight::Publish(p) => p.packet_id.expect("inflight PUBLISH has a packet id"),
            Inflight::Released(id) => *id,
        }
    }
}

/// What a session keeps between connections: resent on resume ([MQTT-4.4.0-1]).
///
/// Taken from a closed connection with
/// [`Connection::into_state`](crate::Connection::into_state) and given to the next one
/// (client: [`Connection::client_with_state`](crate::Connection::client_with_state);
/// server: [`Connection::accept`](crate::Connection::accept)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Outgoing QoS 1/2 messages sent and not complete, in the order they were sent.
    pub inflight: VecDeque<Inflight>,
    /// Outgoing messages waiting for room in the inflight window, in order. QoS 1/2
    /// entries already hold their packet identifier.
    pub queue: VecDeque<Publish>,
    /// Incoming QoS 2 messages acknowledged with PUBREC and not yet released by PUBREL:
    /// a PUBLISH with one of these ids is a duplicate and is not delivered again.
    pub incoming_qos2: BTreeSet<PacketId>,
    /// Incoming QoS 1 and 2 messages delivered whose PUBACK or PUBREC has not left yet
    /// (the application had not called [`Connection::ack`](crate::Connection::ack); for
    /// QoS 2, one of `incoming_qos2`), in arrival order: on the next connection they still
    /// wait for it, and a resend is neither delivered again nor answered before.
    pub incoming_unacked: Vec<PacketId>,
}

impl SessionState {
    /// True if there is nothing to resume.
    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
            && self.queue.is_empty()
            && self.incoming_qos2.is_empty()
            && self.incoming_unacked.is_empty()
    }

    /// Gives every queued QoS 1/2 message without a packet identifier one, as resuming
    /// this state on a connection would, so the caller learns each message's identifier
    /// before anything is sent (a broker that persists sessions records it: a QoS 2
    /// message must keep its identifier across a restart). Messages left without one
    /// because all 65,535 are in use stay so, and are dropped on resume with
    /// [`DropReason::NoPacketId`](crate::DropReason::NoPacketId).
    pub fn assign_packet_ids(&mut self) {
        let mut ids = PacketIds::from_state(self);
        for p in &mut self.queue {
            if needs_id(p) && p.packet_id.is_none() {
                p.packet_id = ids.alloc();
            }
        }
    }
}

/// Packet identifiers in use, allocated from 1..=65535 ([MQTT-2.2.1-3]) and never handed
/// out twice while in use. Independent of the inflight limit.
///
/// A bitmap, and the lowest free identifier is handed out: identifiers in use stay
/// packed at the low end, so the bitmap is as long as the most identifiers ever in use at
/// once need (a word for 64), and allocating and freeing are a few instructions each.
#[derive(Debug, Clone, Default)]
pub(crate) struct PacketIds {
    /// Bit `id % 64` of word `id / 64` is set when `id` is in use; bit 0 (id 0, never
    /// valid) is set once the first word exists.
    words: Vec<u64>,
    /// Identifiers in use (at most 65,535).
    used: u32,
    /// No word before this one has a free bit (at most 1,024 words).
    first_free: u32,
}

/// Words for ids 0..=65535.
const ID_WORDS: usize = 1 << 10;

impl PacketIds {
    /// No identifier in use.
    pub(crate) const fn new() -> Self {
        Self {
            words: Vec::new(),
            used: 0,
            first_free: 0,
        }
    }

    pub(crate) fn alloc(&mut self) -> Option<PacketId> {
        if self.used >= u32::from(u16::MAX) {
            return None;
        }
        let mut i = self.first_free as usize;
        while i < self.words.len() && self.words[i] == u64::MAX {
            i += 1;
        }
        if i == self.words.len() {
            if i == ID_WORDS {
                return None;
            }
            self.push_word();
        }
        self.first_free = i as u32;
        let bit = (!self.words[i]).trailing_zeros() as usize;
        self.words[i] |= 1 << bit;
        self.used += 1;
        // Below 65536: the last word's bits are all ids 65472..=65535.
        PacketId::new((i * 64 + bit) as u16)
    }

    pub(crate) fn mark(&mut self, id: PacketId) {
        let (i, bit) = Self::place(id);
        while self.words.len() <= i {
            self.push_word();
        }
        if self.words[i] & bit == 0 {
            self.words[i] |= bit;
            self.used += 1;
        }
    }

    pub(crate) fn free(&mut self, id: PacketId) {
        let (i, bit) = Self::place(id);
        if let Some(w) = self.words.get_mut(i) {
            if *w & bit != 0 {
                *w &= !bit;
                self.used -= 1;
                self.first_free = self.first_free.min(i as u32);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.used as usize
    }

    fn place(id: PacketId) -> (usize, u64) {
        let id = usize::from(id.get());
        (id / 64, 1 << (id % 64))
    }

    fn push_word(&mut self) {
        // Id 0 is never handed out.
        let w = if self.words.is_empty() { 1 } else { 0 };
        self.words.push(w);
    }

    /// The ids a resumed state holds.
    pub(crate) fn from_state(state: &SessionState) -> Self {
        let mut ids = Self::default();
        for e in &state.inflight {
            ids.mark(e.packet_id());
        }
        for p in &state.queue {
            if let Some(id) = p.packet_id {
                ids.mark(id);
            }
        }
        ids
    }
}

pub(crate) fn needs_id(p: &Publish) -> bool {
    p.qos != QoS::AtMostOnce
}

/// A PUBLISH encoded once, to be copied into many connections' output by
/// [`Connection::publish_encoded`](crate::Connection::publish_encoded): the bytes are
/// shared, and for QoS 1/2 only the packet identifier is rewritten in each copy.
#[derive(Debug, Clone)]
pub struct EncodedPublish {
    pub(crate) bytes: bytes::Bytes,
    pub(crate) id_at: Option<usize>,
    v5: bool,
    qos: QoS,
    retain: bool,
}

impl EncodedPublish {
    /// Encodes `publish` (DUP 0; for QoS 1/2 with a placeholder packet id) for `version`.
    pub fn new(
        publish: &Publish,
        version: mqtt_proto::ProtocolVersion,
    ) -> Result<Self, mqtt_proto::EncodeError> {
        let mut p = publish.clone();
        p.dup = false;
        p.packet_id = needs_id(&p).then_some(PacketId::MIN);
        let mut buf = bytes::BytesMut::with_capacity(p.encoded_len(version));
        p.encode(&mut buf, version, mqtt_proto::MAX_PACKET_SIZE)?;
        Ok(Self {
            bytes: buf.freeze(),
            id_at: p.packet_id_offset(version),
            v5: version.is_v5(),
            qos: p.qos,
            retain: p.retain,
        })
    }

    /// The encoded length.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a PUBLISH has at least a fixed header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn fits(&self, p: &Publish, v: mqtt_proto::ProtocolVersion, max: u32) -> bool {
        self.v5 == v.is_v5()
            && self.qos == p.qos
            && self.retain == p.retain
            && self.bytes.len() <= max as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Never an id in use twice, never 0, the lowest free one first, and all 65,535 can be
    /// in use at once ([MQTT-2.2.1-3]).
    #[test]
    fn packet_ids_are_unique_and_low() {
        let mut ids = PacketIds::default();
        let mut model = BTreeSet::new();
        let mut x: u32 = 7;
        for _ in 0..5_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if (x >> 16).is_multiple_of(3) && !model.is_empty() {
                let nth = (x as usize >> 4) % model.len();
                let id = *model.iter().nth(nth).unwrap();
                model.remove(&id);
                ids.free(PacketId::new(id).unwrap());
            } else {
                let id = ids.alloc().unwrap().get();
                let lowest = (1..=u16::MAX).find(|i| !model.contains(i)).unwrap();
                assert_eq!(id, lowest);
                assert!(model.insert(id));
            }
            assert_eq!(ids.len(), model.len());
        }
        let mut all = PacketIds::default();
        for want in 1..=u16::MAX {
            assert_eq!(all.alloc().map(PacketId::get), Some(want));
        }
        assert_eq!(all.alloc(), None);
        all.free(PacketId::new(40_000).unwrap());
        assert_eq!(all.alloc().map(PacketId::get), Some(40_000));
        // Marking an id twice or freeing one not in use changes nothing.
        let mut m = PacketIds::default();
        m.mark(PacketId::new(300).unwrap());
        m.mark(PacketId::new(300).unwrap());
        m.free(PacketId::new(9).unwrap());
        assert_eq!(m.len(), 1);
        assert_eq!(m.alloc().map(PacketId::get), Some(1));
    }
}
