//! The streaming decoder and the encoder. Each packet's decode and encode sit side by side
//! and switch on the protocol version.

use crate::packet::*;
use crate::properties::*;
use crate::wire::{
    parse_var_int, put_binary, put_var_int, var_int_len, Head, Put, Reader, MAX_VAR_INT,
};
use crate::{
    DecodeError, EncodeError, MqttString, PacketType, ProtocolVersion, QoS, ReasonCode,
    RetainHandling, TopicFilter, TopicName,
};
use bytes::{Buf, Bytes, BytesMut};

/// Largest packet the protocol can express: one type byte, four length bytes and the
/// largest remaining length.
pub const MAX_PACKET_SIZE: u32 = 1 + 4 + MAX_VAR_INT;

/// A streaming decoder for one connection.
///
/// Feed it a `BytesMut` holding whatever has been read so far; [`Decoder::decode`] returns
/// the next complete packet and removes its bytes, or `Ok(None)` ("need more bytes")
/// without touching the buffer. Incomplete input is never an error. A packet whose size
/// exceeds the maximum is rejected as soon as its fixed header is read, before its body
/// is buffered.
///
/// The protocol version decides how most packets are laid out. A server-side decoder
/// starts without one and learns it from the CONNECT it decodes; a client-side decoder is
/// given the version it sent.
#[derive(Debug, Clone)]
pub struct Decoder {
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
}

impl Decoder {
    /// A decoder for the server side: the version comes from the first CONNECT.
    pub fn server() -> Self {
        Self {
            version: None,
            max_packet_size: MAX_PACKET_SIZE,
        }
    }

    /// A decoder for the client side, for the version the client speaks.
    pub fn client(version: ProtocolVersion) -> Self {
        Self {
            version: Some(version),
            max_packet_size: MAX_PACKET_SIZE,
        }
    }

    /// Sets the largest packet accepted, in bytes, fixed header included (the MQTT 5.0
    /// Maximum Packet Size). The default is the protocol's limit, [`MAX_PACKET_SIZE`].
    pub fn with_max_packet_size(mut self, max: u32) -> Self {
        self.max_packet_size = max;
        self
    }

    /// The largest packet accepted.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// The protocol version packets are decoded with, once known.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Sets the protocol version.
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = Some(version);
    }

    /// Decodes the next packet at the start of `buf`.
    ///
    /// `Ok(Some(packet))` removes the packet's bytes from `buf`; `Ok(None)` and `Err(_)`
    /// leave `buf` as it was. After an error the connection should be closed, with a
    /// DISCONNECT carrying [`DecodeError::reason_code`] in 5.0. Decoding a CONNECT sets the
    /// decoder's version to the CONNECT's.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let (ptype, flags) = check_fixed_header(first, self.version)?;
        let Some((remaining, len_bytes)) = parse_var_int(&buf[1..])? else {
            return Ok(None);
        };
        let header = 1 + len_bytes;
        let size = header + remaining as usize;
        if size > self.max_packet_size as usize {
            return Err(DecodeError::PacketTooLarge {
                size,
                max: self.max_packet_size,
            });
        }
        if buf.len() < size {
            return Ok(None);
        }
        if ptype == PacketType::Publish {
            if let Some(v) = self.version {
                if let Some(p) = publish_fast(buf, flags, header, size, v) {
                    return Ok(Some(Packet::Publish(p)));
                }
            }
        }
        // An acknowledgement of two bytes (a packet id; in 5.0 reason Success and no
        // properties) is read in place: no view of the frame is taken.
        if size == 4 && self.version.is_some() {
            if let Some(packet) = short_ack(ptype, buf) {
                buf.advance(4);
                return Ok(Some(packet));
            }
        }
        self.decode_frame(buf, first, ptype, flags, header, size)
    }

    /// The packet at the start of `buf` if it is one whose decoded form keeps no view of
    /// the input, with the bytes it takes: PUBACK, PUBREC, PUBREL or PUBCOMP in their
    /// 4-byte form (a packet id; in 5.0 reason Success and no properties) once the
    /// version is known, PINGREQ or PINGRESP. `None` for anything else, an incomplete
    /// packet or an invalid one, and anything before the version is known:
    /// [`decode`](Self::decode) then reads it (and reports the error). Whatever this
    /// returns, `decode` returns too, taking as many bytes.
    ///
    /// A connection whose input is only acknowledgements (a subscriber's PUBACKs) can
    /// handle them straight from the bytes it was given, without buffering them first.
    pub fn decode_borrowed(&self, buf: &[u8]) -> Option<(Packet, usize)> {
        // Before the version is known only a CONNECT decodes, on the general path.
        self.version?;
        let (&first, rest) = buf.split_first()?;
        let (ptype, _) = check_fixed_header(first, self.version).ok()?;
        let found = match (ptype, rest.first()) {
            (PacketType::PingReq, Some(0)) => (Packet::PingReq, 2),
            (PacketType::PingResp, Some(0)) => (Packet::PingResp, 2),
            (_, Some(2)) => (short_ack(ptype, buf)?, 4),
            _ => return None,
        };
        // Within the limit, as `decode` would check.
        (found.1 <= self.max_packet_size as usize).then_some(found)
    }

    /// Decodes a whole frame, known to be in `buf`, on the general path. Kept out of
    /// line, so that the PUBLISH fast path above is compiled on its own.
    #[inline(never)]
    fn decode_frame(
        &mut self,
        buf: &mut BytesMut,
        first: u8,
        ptype: PacketType,
        flags: u8,
        header: usize,
        size: usize,
    ) -> Result<Option<Packet>, DecodeError> {
        // The body is taken as one shared view (a reference-count increment, not a copy)
        // that the fields are sliced from; on error the fixed header is written again
        // (exactly: only the shortest Remaining Length is accepted) and the bytes are put
        // back, so that the buffer is as the caller gave it.
        let mut frame = buf.split_to(size);
        frame.advance(header);
        let body = frame.freeze();
        match decode_body(ptype, flags, &body, self.version) {
            Ok(packet) => {
                if let Packet::Connect(c) = &packet {
                    self.version = Some(c.protocol_version);
                }
                Ok(Some(packet))
            }
            Err(e) => {
                let mut restored = BytesMut::with_capacity(size + buf.len());
                restored.put_u8(first);
                put_var_int(&mut restored, body.len());
                restored.extend_from_slice(&body);
                restored.extend_from_slice(buf);
                *buf = restored;
                Err(e)
            }
        }
    }
}

/// The common PUBLISH (a valid topic, no properties or 5.0 with none) decoded with the
/// fewest touches. The frame is split off first and its layout checked on its bytes; a
/// PUBLISH that needs the general path (properties, an error to report) is put back
/// (`unsplit` of two adjacent views: no copy) and left for it. The topic and payload are
/// then views of the frame: two reference-count increments in all.
///
/// Splitting before checking rather than after: the split's result is written to memory
/// by a call into `bytes`, and `freeze` reads it back at once with wider loads, which
/// cannot take their data from the narrower stores still in flight (a store-forwarding
/// stall). The checks in between give those stores time to land: about 10 % off the
/// decode of a small PUBLISH (BENCHMARKS.md).
#[inline(always)]
fn publish_fast(
    buf: &mut BytesMut,
    flags: u8,
    header: usize,
    size: usize,
    v: ProtocolVersion,
) -> Option<Publish> {
    let frame = buf.split_to(size);
    let Some((qos, topic_len, packet_id, at)) = publish_layout(&frame[header..], flags, v) else {
        let mut frame = frame;
        frame.unsplit(std::mem::take(buf));
        *buf = frame;
        return None;
    };
    // Everything is checked: from here on nothing fails.
    let mut frame = frame.freeze();
    let topic = frame.slice(header + 2..header + 2 + topic_len);
    frame.advance(header + at);
    let topic = TopicName::from_checked(MqttString::from_utf8_bytes(topic)?);
    Some(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 1 != 0,
        topic,
        packet_id,
        properties: Properties::new(),
        payload: frame,
    })
}

/// The layout of a PUBLISH body that [`publish_fast`] takes: its QoS, topic length,
/// packet identifier and where the payload starts; `None` for anything else.
#[inline(always)]
fn publish_layout(
    body: &[u8],
    flags: u8,
    v: ProtocolVersion,
) -> Option<(QoS, usize, Option<PacketId>, usize)> {
    let qos = QoS::from_u8((flags >> 1) & 3)?;
    let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let topic = body.get(2..2 + topic_len)?;
    let ascii = crate::string::plain_topic_bytes(topic)?;
    if topic.is_empty() || (!ascii && std::str::from_utf8(topic).is_err()) {
        return None;
    }
    let mut at = 2 + topic_len;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        let id = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
        at += 2;
        Some(PacketId::new(id)?)
    };
    if v.is_v5() {
        // Property Length 0 only; anything else takes the general path.
        if *body.get(at)? != 0 {
            return None;
        }
        at += 1;
    }
    Some((qos, topic_len, packet_id, at))
}

/// A PUBACK, PUBREC, PUBREL or PUBCOMP of 4 bytes at the start of `buf` (its flags
/// already checked): `None` for another type or packet id 0.
#[inline]
fn short_ack(ptype: PacketType, buf: &[u8]) -> Option<Packet> {
    let id = PacketId::new(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]))?;
    let ack = PubResponse::new(id);
    match ptype {
        PacketType::PubAck => Some(Packet::PubAck(ack)),
        PacketType::PubRec => Some(Packet::PubRec(ack)),
        PacketType::PubRel => Some(Packet::PubRel(ack)),
        PacketType::PubComp => Some(Packet::PubComp(ack)),
        _ => None,
    }
}

/// Checks the first byte of a fixed header: packet type and flags ([MQTT-2.1.3-1]).
fn check_fixed_header(
    first: u8,
    version: Option<ProtocolVersion>,
) -> Result<(PacketType, u8), DecodeError> {
    let raw = first >> 4;
    let flags = first & 0x0f;
    let ptype = PacketType::from_u8(raw).ok_or(DecodeError::ReservedPacketType(raw))?;
    if ptype == PacketType::Auth && version.is_some_and(|v| !v.is_v5()) {
        return Err(DecodeError::ReservedPacketType(raw));
    }
    if ptype == PacketType::Publish {
        let qos = (flags >> 1) & 3;
        if qos == 3 {
            return Err(DecodeError::InvalidQoS);
        }
        if qos == 0 && flags & 0b1000 != 0 {
            return Err(DecodeError::DupOnQoS0);
        }
    } else if flags != ptype.required_flags() {
        return Err(DecodeError::InvalidFlags {
            packet: ptype,
            flags,
        });
    }
    Ok((ptype, flags))
}

fn packet_id(r: &mut Reader) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16()?).ok_or(DecodeError::ZeroPacketId)
}

fn reason_code(r: &mut Reader) -> Result<ReasonCode, DecodeError> {
    let code = r.u8()?;
    ReasonCode::from_u8(code)
        .filter(|c| c.is_valid_for(r.packet))
        .ok_or(DecodeError::InvalidReasonCode {
            packet: r.packet,
            code,
        })
}

#[inline]
fn topic_filter(r: &mut Reader) -> Result<TopicFilter, DecodeError> {
    TopicFilter::from_wire(r.binary()?)
}

/// Decodes the variable header and payload of a packet whose fixed header was checked.
pub(crate) fn decode_body(
    ptype: PacketType,
    flags: u8,
    body: &Bytes,
    version: Option<ProtocolVersion>,
) -> Result<Packet, DecodeError> {
    let mut r = Reader::new(body, ptype);
    let v5 = match version {
        Some(v) => v.is_v5(),
        None if ptype == PacketType::Connect => false,
        None => return Err(DecodeError::VersionUnknown(ptype)),
    };
    let packet = match ptype {
        PacketType::Connect => Packet::Connect(decode_connect(&mut r)?),
        PacketType::ConnAck => Packet::ConnAck(Box::new(decode_connack(
            &mut r,
            version.unwrap_or(ProtocolVersion::V5),
        )?)),
        PacketType::Publish => Packet::Publish(decode_publish(flags, &mut r, v5)?),
        PacketType::PubAck => Packet::PubAck(decode_pub_response(&mut r, v5)?),
        PacketType::PubRec => Packet::PubRec(decode_pub_response(&mut r, v5)?),
        PacketType::PubRel => Packet::PubRel(decode_pub_response(&mut r, v5)?),
        PacketType::PubComp => Packet::PubComp(decode_pub_response(&mut r, v5)?),
        PacketType::Subscribe => Packet::Subscribe(decode_subscribe(&mut r, v5)?),
        PacketType::SubAck => Packet::SubAck(decode_suback(&mut r, v5)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(decode_unsubscribe(&mut r, v5)?),
        PacketType::UnsubAck => Packet::UnsubAck(decode_unsuback(&mut r, v5)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => {
            let mut d = Disconnect::default();
            if v5 && !r.is_empty() {
                d.reason_code = reason_code(&mut r)?;
                if !r.is_empty() {
                    d.properties = Properties::read(&mut r)?;
                }
            }
            Packet::Disconnect(d)
        }
        PacketType::Auth => {
            let mut a = Auth::default();
            if !r.is_empty() {
                a.reason_code = reason_code(&mut r)?;
                if !r.is_empty() {
                    a.properties = Properties::read(&mut r)?;
                }
            }
            check_auth_data(
                &a.properties.authentication_method,
                &a.properties.authentication_data,
            )?;
            Packet::Auth(a)
        }
    };
    r.finish()?;
    Ok(packet)
}

fn check_auth_data(method: &Option<MqttString>, data: &Option<Bytes>) -> Result<(), DecodeError> {
    if data.is_some() && method.is_none() {
        Err(DecodeError::AuthDataWithoutMethod)
    } else {
        Ok(())
    }
}

/// Decodes a CONNECT straight into its box. The box is 120 bytes: the properties and the
/// will are stored apart, and only when present, so that a 3.1.1 CONNECT fills and moves
/// little.
fn decode_connect(r: &mut Reader) -> Result<Box<Connect>, DecodeError> {
    let name = r.binary_ref()?;
    let level = r.u8()?;
    let protocol_version = match (name, level) {
        (b"MQTT", 4) => ProtocolVersion::V3_1_1,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V3_1,
        (b"MQTT", l) | (b"MQIsdp", l) => return Err(DecodeError::UnsupportedProtocolVersion(l)),
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    let v5 = protocol_version.is_v5();
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::WillFlagsWithoutWill);
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidQoS)?;
    if !v5 && has_password && !has_username {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16()?;
    let properties: Properties<ConnectProperties> = if v5 {
        Properties::read(r)?
    } else {
        Properties::new()
    };
    check_auth_data(
        &properties.authentication_method,
        &properties.authentication_data,
    )?;
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 {
            Properties::read(r)?
        } else {
            Properties::new()
        };
        let topic = TopicName::from_string(r.string()?).map_err(DecodeError::InvalidTopicName)?;
        let payload = r.binary()?;
        Some(Box::new(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        }))
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;
    if !client_id_allowed(protocol_version, &client_id, clean_start) {
        return Err(DecodeError::InvalidClientId);
    }
    Ok(Box::new(Connect {
        protocol_version,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    }))
}

/// Client identifier rules by version: 3.1 needs 1 to 23 bytes; 3.1.1 allows an empty one
/// only with Clean Session 1 (3.1.1 [MQTT-3.1.3-7]); 5.0 allows any.
fn client_id_allowed(v: ProtocolVersion, id: &MqttString, clean_start: bool) -> bool {
    match v {
        ProtocolVersion::V3_1 => (1..=23).contains(&id.len()),
        ProtocolVersion::V3_1_1 => clean_start || !id.is_empty(),
        ProtocolVersion::V5 => true,
    }
}

fn decode_connack(r: &mut Reader, v: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let v5 = v.is_v5();
    let flags = r.u8()?;
    if flags & 0xfe != 0 {
        return Err(DecodeError::ConnAckReservedFlags);
    }
    // 3.1 has no Session Present flag: the byte is unused.
    let session_present = flags & 0x01 != 0 && v != ProtocolVersion::V3_1;
    let reason_code = if v5 {
        reason_code(r)?
    } else {
        let code = r.u8()?;
        ReasonCode::from_v3_connack_code(code).ok_or(DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code,
        })?
    };
    if session_present && reason_code != ReasonCode::Success {
        return Err(DecodeError::SessionPresentOnRefusal);
    }
    let properties = if v5 {
        ConnAckProperties::read_inline(r)?
    } else {
        ConnAckProperties::default()
    };
    check_auth_data(
        &properties.authentication_method,
        &properties.authentication_data,
    )?;
    Ok(ConnAck {
        session_present,
        reason_code,
        properties,
    })
}

fn decode_publish(flags: u8, r: &mut Reader, v5: bool) -> Result<Publish, DecodeError> {
    let dup = flags & 0b1000 != 0;
    let qos = QoS::from_u8((flags >> 1) & 3).ok_or(DecodeError::InvalidQoS)?;
    let retain = flags & 1 != 0;
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(r)?)
    };
    let properties = if v5 {
        Properties::<PublishProperties>::read(r).map_err(|e| match e {
            DecodeError::InvalidPropertyValue(crate::PropertyId::TopicAlias) => {
                DecodeError::TopicAliasZero
            }
            e => e,
        })?
    } else {
        Properties::new()
    };
    let topic = if topic.is_empty() {
        if !v5 {
            return Err(DecodeError::InvalidTopicName(crate::TopicError::Empty));
        }
        if properties.topic_alias.is_none() {
            return Err(DecodeError::EmptyTopicWithoutAlias);
        }
        TopicName::empty()
    } else {
        TopicName::allow_empty(topic).map_err(DecodeError::InvalidTopicName)?
    };
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

fn decode_pub_response(r: &mut Reader, v5: bool) -> Result<PubResponse, DecodeError> {
    let mut p = PubResponse::new(packet_id(r)?);
    if v5 && !r.is_empty() {
        p.reason_code = reason_code(r)?;
        if !r.is_empty() {
            p.properties = Properties::read(r)?;
        }
    }
    Ok(p)
}

fn decode_subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if v5 {
        Properties::read(r)?
    } else {
        Properties::new()
    };
    if r.is_empty() {
        return Err(DecodeError::NoTopicFilters(PacketType::Subscribe));
    }
    let mut subscriptions = Vec::with_capacity(r.count_binary(1));
    while !r.is_empty() {
        let filter = topic_filter(r)?;
        let o = r.u8()?;
        let reserved = if v5 { 0xc0 } else { 0xfc };
        if o & reserved != 0 {
            return Err(DecodeError::SubscriptionOptionsReserved);
        }
        let qos = QoS::from_u8(o & 3).ok_or(DecodeError::InvalidQoS)?;
        let retain_handling =
            RetainHandling::from_u8((o >> 4) & 3).ok_or(DecodeError::InvalidRetainHandling)?;
        let no_local = o & 0x04 != 0;
        if no_local && filter.shared().is_some() {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
        subscriptions.push(Subscription {
            filter,
            options: SubscriptionOptions {
                qos,
                no_local,
                retain_as_published: o & 0x08 != 0,
                retain_handling,
            },
        });
    }
    Ok(Subscribe {
        packet_id,
        properties,
        subscriptions,
    })
}

fn decode_suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if v5 {
        Properties::read(r)?
    } else {
        Properties::new()
    };
    if r.is_empty() {
        return Err(DecodeError::NoReasonCodes(PacketType::SubAck));
    }
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        let code = if v5 {
            reason_code(r)?
        } else {
            match r.u8()? {
                0 => ReasonCode::Success,
                1 => ReasonCode::GrantedQoS1,
                2 => ReasonCode::GrantedQoS2,
                0x80 => ReasonCode::UnspecifiedError,
                code => {
                    return Err(DecodeError::InvalidReasonCode {
                        packet: PacketType::SubAck,
                        code,
                    })
                }
            }
        };
        reason_codes.push(code);
    }
    Ok(SubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

fn decode_unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if v5 {
        Properties::read(r)?
    } else {
        Properties::new()
    };
    if r.is_empty() {
        return Err(DecodeError::NoTopicFilters(PacketType::Unsubscribe));
    }
    let mut filters = Vec::with_capacity(r.count_binary(0));
    while !r.is_empty() {
        filters.push(topic_filter(r)?);
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

fn decode_unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let mut u = UnsubAck {
        packet_id: packet_id(r)?,
        properties: Properties::new(),
        reason_codes: Vec::new(),
    };
    if v5 {
        u.properties = Properties::read(r)?;
        if r.is_empty() {
            return Err(DecodeError::NoReasonCodes(PacketType::UnsubAck));
        }
        while !r.is_empty() {
            u.reason_codes.push(reason_code(r)?);
        }
    }
    Ok(u)
}

// ---------------------------------------------------------------------------------------
// Encoding

impl Packet {
    /// Exact number of bytes [`Packet::encode`] writes for this packet in `version`
    /// (CONNECT always uses its own `protocol_version`).
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let body = self.body_len(version);
        1 + var_int_len(body) + body
    }

    /// Encodes the packet at the end of `buf`, for a peer speaking `version` that accepts
    /// packets up to `max_packet_size` bytes. Returns the number of bytes written.
    ///
    /// All or nothing: on error `buf` is unchanged. CONNECT is encoded in its own
    /// `protocol_version`. Fields that do not exist in 3.x (properties, reason codes other
    /// than those 3.x can express) are left out for 3.x peers; SUBACK failures become
    /// 0x80 and CONNACK refusals map as [`ReasonCode::v3_connack_code`] says.
    #[inline]
    pub fn encode(
        &self,
        buf: &mut BytesMut,
        version: ProtocolVersion,
        max_packet_size: u32,
    ) -> Result<usize, EncodeError> {
        match self {
            Packet::Publish(p) => p.encode(buf, version, max_packet_size),
            Packet::Connect(c) => encode_connect(c, buf, max_packet_size),
            _ => self.encode_other(buf, version, max_packet_size),
        }
    }

    /// [`Packet::encode`] for every packet but PUBLISH and CONNECT.
    fn encode_other(
        &self,
        buf: &mut BytesMut,
        version: ProtocolVersion,
        max_packet_size: u32,
    ) -> Result<usize, EncodeError> {
        self.check(version)?;
        let body = self.body_len(version);
        let size = 1 + var_int_len(body) + body;
        if body > MAX_VAR_INT as usize || size > max_packet_size as usize {
            return Err(EncodeError::PacketTooLarge {
                size,
                max: max_packet_size.min(MAX_PACKET_SIZE),
            });
        }
        buf.reserve(size);
        buf.put_u8(self.first_byte());
        put_var_int(buf, body);
        let start = buf.len();
        self.put_body(version, buf);
        debug_assert_eq!(buf.len() - start, body, "body_len disagrees with put_body");
        Ok(size)
    }

    fn first_byte(&self) -> u8 {
        let t = self.packet_type();
        let flags = match self {
            Packet::Publish(p) => publish_flags(p),
            _ => t.required_flags(),
        };
        ((t as u8) << 4) | flags
    }

    fn check(&self, v: ProtocolVersion) -> Result<(), EncodeError> {
        let v5 = v.is_v5();
        let codes = |packet: PacketType, codes: &[ReasonCode]| match codes
            .iter()
            .find(|c| v5 && !c.is_valid_for(packet))
        {
            Some(&code) => Err(EncodeError::InvalidReasonCode { packet, code }),
            None => Ok(()),
        };
        match self {
            Packet::Connect(c) => {
                connect_check(c)?;
                if v5 {
                    if let Some(w) = &c.will {
                        w.properties.check()?;
                    }
                    c.properties.check()?;
                }
                Ok(())
            }
            Packet::ConnAck(c) => {
                codes(PacketType::ConnAck, &[c.reason_code])?;
                if c.session_present
                    && v != ProtocolVersion::V3_1
                    && (if v5 {
                        c.reason_code != ReasonCode::Success
                    } else {
                        c.reason_code.v3_connack_code() != 0
                    })
                {
                    return Err(EncodeError::SessionPresentOnRefusal);
                }
                if v5 {
                    if c.properties.authentication_data.is_some()
                        && c.properties.authentication_method.is_none()
                    {
                        return Err(EncodeError::AuthDataWithoutMethod);
                    }
                    c.properties.check()?;
                }
                Ok(())
            }
            Packet::Publish(p) => publish_check(p, v5),
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                codes(self.packet_type(), &[r.reason_code])
            }
            Packet::Subscribe(s) if s.subscriptions.is_empty() => {
                Err(EncodeError::Empty(PacketType::Subscribe))
            }
            Packet::Subscribe(s) => {
                if v5 {
                    if s.subscriptions
                        .iter()
                        .any(|s| s.options.no_local && s.filter.shared().is_some())
                    {
                        return Err(EncodeError::NoLocalOnSharedSubscription);
                    }
                    s.properties.check()?;
                }
                Ok(())
            }
            Packet::SubAck(s) if s.reason_codes.is_empty() => {
                Err(EncodeError::Empty(PacketType::SubAck))
            }
            Packet::SubAck(s) => codes(PacketType::SubAck, &s.reason_codes),
            Packet::Unsubscribe(u) if u.filters.is_empty() => {
                Err(EncodeError::Empty(PacketType::Unsubscribe))
            }
            Packet::UnsubAck(u) if v5 && u.reason_codes.is_empty() => {
                Err(EncodeError::Empty(PacketType::UnsubAck))
            }
            Packet::UnsubAck(u) => codes(PacketType::UnsubAck, &u.reason_codes),
            Packet::Disconnect(d) => codes(PacketType::Disconnect, &[d.reason_code]),
            Packet::Auth(_) if !v5 => Err(EncodeError::NotInVersion {
                packet: PacketType::Auth,
                version: v,
            }),
            Packet::Auth(a) => {
                if a.properties.authentication_data.is_some()
                    && a.properties.authentication_method.is_none()
                {
                    return Err(EncodeError::AuthDataWithoutMethod);
                }
                a.properties.check()?;
                codes(PacketType::Auth, &[a.reason_code])
            }
            Packet::Unsubscribe(_) | Packet::PingReq | Packet::PingResp => Ok(()),
        }
    }

    fn body_len(&self, v: ProtocolVersion) -> usize {
        let v5 = v.is_v5();
        let props = |n: usize| if v5 { var_int_len(n) + n } else { 0 };
        match self {
            Packet::Connect(c) => {
                let v5 = c.protocol_version.is_v5();
                let will = c.will.as_ref().filter(|_| v5);
                connect_body_len(
                    c,
                    v5.then(|| c.properties.body_len()),
                    will.map(|w| w.properties.body_len()),
                )
            }
            Packet::ConnAck(c) => 2 + props(c.properties.body_len()),
            Packet::Publish(p) => publish_body_len(p, v5),
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                2 + reason_and_props(v5, r.reason_code, r.properties.body_len())
            }
            Packet::Subscribe(s) => {
                2 + props(s.properties.body_len())
                    + s.subscriptions
                        .iter()
                        .map(|s| 2 + s.filter.len() + 1)
                        .sum::<usize>()
            }
            Packet::SubAck(s) => 2 + props(s.properties.body_len()) + s.reason_codes.len(),
            Packet::Unsubscribe(u) => {
                2 + props(u.properties.body_len())
                    + u.filters.iter().map(|f| 2 + f.len()).sum::<usize>()
            }
            Packet::UnsubAck(u) => {
                2 + if v5 {
                    props(u.properties.body_len()) + u.reason_codes.len()
                } else {
                    0
                }
            }
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(d) => reason_and_props(v5, d.reason_code, d.properties.body_len()),
            Packet::Auth(a) => reason_and_props(v5, a.reason_code, a.properties.body_len()),
        }
    }

    fn put_body(&self, v: ProtocolVersion, buf: &mut BytesMut) {
        let v5 = v.is_v5();
        match self {
            Packet::Connect(c) => {
                let v5 = c.protocol_version.is_v5();
                let will = c.will.as_ref().filter(|_| v5);
                put_connect(
                    c,
                    v5.then(|| c.properties.body_len()),
                    will.map(|w| w.properties.body_len()),
                    buf,
                );
            }
            Packet::ConnAck(c) => {
                buf.put_u8(u8::from(c.session_present && v != ProtocolVersion::V3_1));
                if v5 {
                    buf.put_u8(c.reason_code.as_u8());
                    c.properties.put(buf);
                } else {
                    buf.put_u8(c.reason_code.v3_connack_code());
                }
            }
            Packet::Publish(p) => publish_put(p, v5, publish_props_len(p, v5), buf),
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                buf.put_u16(r.packet_id.get());
                put_reason_and_props(v5, r.reason_code, &r.properties, buf);
            }
            Packet::Subscribe(s) => {
                buf.put_u16(s.packet_id.get());
                if v5 {
                    s.properties.put(buf);
                }
                for sub in &s.subscriptions {
                    put_binary(buf, sub.filter.as_bytes());
                    let o = &sub.options;
                    let mut byte = o.qos as u8;
                    if v5 {
                        byte |= u8::from(o.no_local) << 2
                            | u8::from(o.retain_as_published) << 3
                            | (o.retain_handling as u8) << 4;
                    }
                    buf.put_u8(byte);
                }
            }
            Packet::SubAck(s) => {
                buf.put_u16(s.packet_id.get());
                if v5 {
                    s.properties.put(buf);
                }
                for c in &s.reason_codes {
                    buf.put_u8(match (v5, c) {
                        (true, c) => c.as_u8(),
                        (false, c) if c.is_success() && c.as_u8() <= 2 => c.as_u8(),
                        (false, _) => 0x80,
                    });
                }
            }
            Packet::Unsubscribe(u) => {
                buf.put_u16(u.packet_id.get());
                if v5 {
                    u.properties.put(buf);
                }
                for f in &u.filters {
                    put_binary(buf, f.as_bytes());
                }
            }
            Packet::UnsubAck(u) => {
                buf.put_u16(u.packet_id.get());
                if v5 {
                    u.properties.put(buf);
                    for c in &u.reason_codes {
                        buf.put_u8(c.as_u8());
                    }
                }
            }
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(d) => put_reason_and_props(v5, d.reason_code, &d.properties, buf),
            Packet::Auth(a) => put_reason_and_props(v5, a.reason_code, &a.properties, buf),
        }
    }
}

// PUBLISH, the hot path, can be encoded from a reference without building a `Packet`.

fn publish_flags(p: &Publish) -> u8 {
    (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
}

fn publish_check(p: &Publish, v5: bool) -> Result<(), EncodeError> {
    if p.packet_id.is_some() != (p.qos != QoS::AtMostOnce) {
        return Err(EncodeError::PacketIdMismatch);
    }
    if p.dup && p.qos == QoS::AtMostOnce {
        return Err(EncodeError::DupOnQoS0);
    }
    if p.topic.is_empty() && !(v5 && p.properties.topic_alias.is_some()) {
        return Err(EncodeError::EmptyTopic);
    }
    if v5 {
        p.properties.check()?;
    }
    Ok(())
}

/// Bytes of the properties (without their length), walked once per encode.
fn publish_props_len(p: &Publish, v5: bool) -> usize {
    if v5 {
        p.properties.body_len()
    } else {
        0
    }
}

fn publish_body_len_with(p: &Publish, v5: bool, props_len: usize) -> usize {
    let props = if v5 {
        var_int_len(props_len) + props_len
    } else {
        0
    };
    2 + p.topic.len() + if p.packet_id.is_some() { 2 } else { 0 } + props + p.payload.len()
}

fn publish_body_len(p: &Publish, v5: bool) -> usize {
    publish_body_len_with(p, v5, publish_props_len(p, v5))
}

fn publish_put(p: &Publish, v5: bool, props_len: usize, buf: &mut BytesMut) {
    put_binary(buf, p.topic.as_bytes());
    if let Some(id) = p.packet_id {
        buf.put_u16(id.get());
    }
    if v5 {
        put_var_int(buf, props_len);
        if props_len > 0 {
            p.properties.put_body(buf);
        }
    }
    buf.put_slice(&p.payload);
}

impl Publish {
    /// Exact number of bytes [`Publish::encode`] writes.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let body = publish_body_len(self, version.is_v5());
        1 + var_int_len(body) + body
    }

    /// Encodes this PUBLISH, like [`Packet::encode`] but without building a `Packet`.
    pub fn encode(
        &self,
        buf: &mut BytesMut,
        version: ProtocolVersion,
        max_packet_size: u32,
    ) -> Result<usize, EncodeError> {
        let v5 = version.is_v5();
        publish_check(self, v5)?;
        let props_len = publish_props_len(self, v5);
        let body = publish_body_len_with(self, v5, props_len);
        let size = 1 + var_int_len(body) + body;
        if body > MAX_VAR_INT as usize || size > max_packet_size as usize {
            return Err(EncodeError::PacketTooLarge {
                size,
                max: max_packet_size.min(MAX_PACKET_SIZE),
            });
        }
        buf.reserve(size);
        // At most five copies: fixed header with the topic length, topic, packet
        // identifier with the property length, properties, payload. The common shapes
        // (Remaining Length of one or two bytes, no properties) are copies of a known
        // size, which compile to plain stores.
        let first = ((PacketType::Publish as u8) << 4) | publish_flags(self);
        let topic = self.topic.as_bytes();
        let [t0, t1] = (topic.len() as u16).to_be_bytes();
        if body < 128 {
            buf.extend_from_slice(&[first, body as u8, t0, t1]);
        } else if body < 16_384 {
            buf.extend_from_slice(&[first, body as u8 | 0x80, (body >> 7) as u8, t0, t1]);
        } else {
            let mut head = Head::<{ 1 + 4 + 2 }>::new();
            head.u8(first);
            head.var_int(body);
            head.u16(topic.len() as u16);
            head.put(buf);
        }
        buf.extend_from_slice(topic);
        match (self.packet_id, v5) {
            (Some(id), true) if props_len == 0 => {
                let [i0, i1] = id.get().to_be_bytes();
                buf.extend_from_slice(&[i0, i1, 0]);
            }
            (Some(id), false) => buf.extend_from_slice(&id.get().to_be_bytes()),
            (None, false) => {}
            (id, _) => {
                if let Some(id) = id {
                    buf.put_u16(id.get());
                }
                put_var_int(buf, props_len);
                if props_len > 0 {
                    self.properties.put_body(buf);
                }
            }
        }
        buf.extend_from_slice(&self.payload);
        Ok(size)
    }

    /// Where the packet identifier sits in the encoded bytes (QoS 1/2), so one encoding
    /// can be copied for many receivers and only the identifier changed.
    pub fn packet_id_offset(&self, version: ProtocolVersion) -> Option<usize> {
        self.packet_id?;
        let body = publish_body_len(self, version.is_v5());
        Some(1 + var_int_len(body) + 2 + self.topic.len())
    }
}

/// Reason code and properties of the acknowledgements, DISCONNECT and AUTH: both left out
/// when the code is Success and there are no properties, the property length left out
/// when there are no properties.
fn reason_and_props(v5: bool, code: ReasonCode, props_len: usize) -> usize {
    if !v5 || (code == ReasonCode::Success && props_len == 0) {
        0
    } else if props_len == 0 {
        1
    } else {
        1 + var_int_len(props_len) + props_len
    }
}

fn put_reason_and_props<P: PropertyBlock>(v5: bool, code: ReasonCode, p: &P, buf: &mut BytesMut) {
    let props_len = p.body_len();
    if !v5 || (code == ReasonCode::Success && props_len == 0) {
        return;
    }
    buf.put_u8(code.as_u8());
    if props_len > 0 {
        p.put(buf);
    }
}

/// The checks of a CONNECT other than those of its property sets.
fn connect_check(c: &Connect) -> Result<(), EncodeError> {
    let v = c.protocol_version;
    let v5 = v.is_v5();
    if !v5 && c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::PasswordWithoutUsername);
    }
    if !client_id_allowed(v, &c.client_id, c.clean_start) {
        return Err(EncodeError::InvalidClientId);
    }
    if v5
        && c.properties.authentication_data.is_some()
        && c.properties.authentication_method.is_none()
    {
        return Err(EncodeError::AuthDataWithoutMethod);
    }
    if c.password.as_ref().is_some_and(|p| p.len() > 0xffff) {
        return Err(EncodeError::FieldTooLong);
    }
    if c.will.as_ref().is_some_and(|w| w.payload.len() > 0xffff) {
        return Err(EncodeError::FieldTooLong);
    }
    Ok(())
}

/// A CONNECT's body length, given the lengths of its property sets (5.0) and of its Will
/// Properties (5.0, with a will).
fn connect_body_len(c: &Connect, props: Option<usize>, will_props: Option<usize>) -> usize {
    let with_len = |n: usize| var_int_len(n) + n;
    let mut n = 2 + c.protocol_version.protocol_name().len() + 1 + 1 + 2;
    n += props.map_or(0, with_len);
    n += 2 + c.client_id.len();
    if let Some(w) = &c.will {
        n += will_props.map_or(0, with_len) + 2 + w.topic.len() + 2 + w.payload.len();
    }
    n += c.username.as_ref().map_or(0, |u| 2 + u.len());
    n += c.password.as_ref().map_or(0, |p| 2 + p.len());
    n
}

/// CONNECT, in its own protocol version, with each property set walked twice (checked
/// and measured together, then written) rather than four times.
fn encode_connect(
    c: &Connect,
    buf: &mut BytesMut,
    max_packet_size: u32,
) -> Result<usize, EncodeError> {
    let v5 = c.protocol_version.is_v5();
    connect_check(c)?;
    let (props, will_props) = if v5 {
        let will = match &c.will {
            Some(w) => Some(w.properties.checked_len()?),
            None => None,
        };
        (Some(c.properties.checked_len()?), will)
    } else {
        (None, None)
    };
    let body = connect_body_len(c, props, will_props);
    let size = 1 + var_int_len(body) + body;
    if body > MAX_VAR_INT as usize || size > max_packet_size as usize {
        return Err(EncodeError::PacketTooLarge {
            size,
            max: max_packet_size.min(MAX_PACKET_SIZE),
        });
    }
    buf.reserve(size);
    buf.put_u8((PacketType::Connect as u8) << 4);
    put_var_int(buf, body);
    put_connect(c, props, will_props, buf);
    Ok(size)
}

fn put_connect(c: &Connect, props: Option<usize>, will_props: Option<usize>, buf: &mut BytesMut) {
    let v = c.protocol_version;
    let mut head = Head::<{ 2 + 6 + 1 + 1 + 2 }>::new();
    head.u16(v.protocol_name().len() as u16);
    for &b in v.protocol_name().as_bytes() {
        head.u8(b);
    }
    head.u8(v.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
    }
    flags |= u8::from(c.password.is_some()) << 6 | u8::from(c.username.is_some()) << 7;
    head.u8(flags);
    head.u16(c.keep_alive);
    head.put(buf);
    if let Some(n) = props {
        put_var_int(buf, n);
        if n > 0 {
            c.properties.put_body(buf);
        }
    }
    put_binary(buf, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if let Some(n) = will_props {
            put_var_int(buf, n);
            if n > 0 {
                w.properties.put_body(buf);
            }
        }
        put_binary(buf, w.topic.as_bytes());
        put_binary(buf, &w.payload);
    }
    if let Some(u) = &c.username {
        put_binary(buf, u.as_bytes());
    }
    if let Some(p) = &c.password {
        put_binary(buf, p);
    }
}
