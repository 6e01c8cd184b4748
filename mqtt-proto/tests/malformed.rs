//! One test per class of malformed input: the error, its MQTT 5.0 reason code, and that
//! the buffer is left as it was. Statement ids of 3.1.1 and 5.0 are tagged with their
//! version where the numbering differs.

#![allow(clippy::field_reassign_with_default)]

use bytes::BytesMut;
use mqtt_proto::*;
use ProtocolVersion::{V3_1, V3_1_1, V5};

#[track_caller]
fn reject(version: ProtocolVersion, bytes: &[u8], expected: DecodeError, code: ReasonCode) {
    reject_with(Decoder::client(version), bytes, expected, code);
}

#[track_caller]
fn reject_with(mut d: Decoder, bytes: &[u8], expected: DecodeError, code: ReasonCode) {
    let mut buf = BytesMut::from(bytes);
    let err = d.decode(&mut buf).expect_err("input must be rejected");
    assert_eq!(err, expected);
    assert_eq!(err.reason_code(), code);
    assert_eq!(&buf[..], bytes, "an error leaves the buffer untouched");
}

/// A CONNECT with the given protocol name, level and flags, keep alive 60, and `rest`
/// after the keep alive.
fn connect(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut b = vec![0x10, 0, 0, name.len() as u8];
    b.extend_from_slice(name);
    b.extend_from_slice(&[level, flags, 0, 60]);
    b.extend_from_slice(rest);
    b[1] = (b.len() - 2) as u8;
    b
}

fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![first, body.len() as u8];
    b.extend_from_slice(body);
    b
}

const MALFORMED: ReasonCode = ReasonCode::MalformedPacket;
const PROTOCOL: ReasonCode = ReasonCode::ProtocolError;

// ----- Fixed header ---------------------------------------------------------------------

#[test]
fn reserved_packet_types() {
    for v in [V3_1, V3_1_1, V5] {
        reject(
            v,
            b"\x00\x00",
            DecodeError::ReservedPacketType(0),
            MALFORMED,
        );
    }
    // AUTH (15) exists only in 5.0.
    for v in [V3_1, V3_1_1] {
        reject(
            v,
            b"\xf0\x00",
            DecodeError::ReservedPacketType(15),
            MALFORMED,
        );
    }
}

#[test]
fn reserved_flags_are_checked_for_every_packet_type() {
    // 3.1.1 [MQTT-2.2.2-1], 3.1.1 [MQTT-2.2.2-2], 5.0 [MQTT-2.1.3-1]; PUBREL, SUBSCRIBE and
    // UNSUBSCRIBE need 0b0010 ([MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]),
    // DISCONNECT 0 ([MQTT-3.14.1-1]), AUTH 0 ([MQTT-3.15.1-1]).
    for t in [1u8, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15] {
        let packet = PacketType::from_u8(t).unwrap();
        let good = if matches!(t, 6 | 8 | 10) { 0b0010 } else { 0 };
        for flags in (0..16u8).filter(|&f| f != good) {
            reject(
                V5,
                &[t << 4 | flags, 0],
                DecodeError::InvalidFlags { packet, flags },
                MALFORMED,
            );
        }
    }
}

#[test]
fn publish_qos_3_is_malformed() {
    // [MQTT-3.3.1-4]
    for v in [V3_1, V3_1_1, V5] {
        reject(
            v,
            b"\x36\x07\x00\x03a/b\x00\x01",
            DecodeError::InvalidQoS,
            MALFORMED,
        );
    }
}

#[test]
fn dup_on_qos0_is_malformed() {
    // [MQTT-3.3.1-2]
    reject(
        V3_1_1,
        b"\x38\x05\x00\x03a/b",
        DecodeError::DupOnQoS0,
        MALFORMED,
    );
    reject(
        V5,
        b"\x38\x06\x00\x03a/b\x00",
        DecodeError::DupOnQoS0,
        MALFORMED,
    );
}

#[test]
fn remaining_length_longer_than_four_bytes() {
    reject(
        V3_1_1,
        b"\x30\xff\xff\xff\xff\x7f",
        DecodeError::VarIntTooLong,
        MALFORMED,
    );
    // Known to be malformed after the fourth length byte: no need to wait for more.
    reject(
        V3_1_1,
        b"\x30\xff\xff\xff\xff",
        DecodeError::VarIntTooLong,
        MALFORMED,
    );
    let mut partial = BytesMut::from(&b"\x30\xff\xff\xff"[..]);
    assert_eq!(Decoder::client(V3_1_1).decode(&mut partial), Ok(None));
}

#[test]
fn variable_byte_integer_must_be_minimal() {
    // 5.0 [MQTT-1.5.5-1]: 0 written in two bytes.
    reject(
        V5,
        b"\xc0\x80\x00",
        DecodeError::VarIntNotMinimal,
        MALFORMED,
    );
    // A property length written in two bytes.
    reject(
        V5,
        b"\x30\x07\x00\x03a/b\x80\x00",
        DecodeError::VarIntNotMinimal,
        MALFORMED,
    );
}

#[test]
fn oversized_packet_is_refused_at_its_fixed_header() {
    // Only the fixed header has arrived: the size is known, the body is not buffered.
    let d = Decoder::client(V5).with_max_packet_size(1000);
    reject_with(
        d.clone(),
        b"\x30\xe8\x07",
        DecodeError::PacketTooLarge {
            size: 1003,
            max: 1000,
        },
        ReasonCode::PacketTooLarge,
    );
    // Exactly at the limit is accepted.
    let mut ok = BytesMut::from(&b"\xc0\x00"[..]);
    assert_eq!(
        Decoder::client(V5).with_max_packet_size(2).decode(&mut ok),
        Ok(Some(Packet::PingReq))
    );
}

#[test]
fn packet_before_connect_on_a_server() {
    // [MQTT-3.1.0-1]: the first packet from a client is CONNECT.
    reject_with(
        Decoder::server(),
        b"\xc0\x00",
        DecodeError::VersionUnknown(PacketType::PingReq),
        PROTOCOL,
    );
}

// ----- Lengths --------------------------------------------------------------------------

#[test]
fn fields_running_past_the_packet() {
    // Topic length 5 in a 5-byte body.
    reject(
        V3_1_1,
        b"\x30\x05\x00\x05a/b",
        DecodeError::Truncated(PacketType::Publish),
        MALFORMED,
    );
    // PUBACK with one byte of packet id.
    reject(
        V3_1_1,
        b"\x40\x01\x00",
        DecodeError::Truncated(PacketType::PubAck),
        MALFORMED,
    );
    // Property length beyond the packet.
    reject(
        V5,
        b"\x30\x08\x00\x03a/b\x09\x01\x01",
        DecodeError::Truncated(PacketType::Publish),
        MALFORMED,
    );
    // A property value cut short inside the property block.
    reject(
        V5,
        b"\x30\x08\x00\x03a/b\x02\x02\x00",
        DecodeError::Truncated(PacketType::Publish),
        MALFORMED,
    );
    // 5.0 CONNACK without its property length.
    reject(
        V5,
        b"\x20\x02\x00\x00",
        DecodeError::Truncated(PacketType::ConnAck),
        MALFORMED,
    );
}

#[test]
fn bytes_after_the_last_field() {
    reject(
        V3_1_1,
        b"\xc0\x01\x00",
        DecodeError::TrailingBytes(PacketType::PingReq),
        MALFORMED,
    );
    reject(
        V3_1_1,
        b"\x40\x03\x00\x01\x00",
        DecodeError::TrailingBytes(PacketType::PubAck),
        MALFORMED,
    );
    reject(
        V3_1_1,
        b"\xe0\x01\x00",
        DecodeError::TrailingBytes(PacketType::Disconnect),
        MALFORMED,
    );
    let mut b = connect(b"MQTT", 4, 0x02, b"\x00\x01c");
    b.push(0);
    b[1] += 1;
    reject(
        V3_1_1,
        &b,
        DecodeError::TrailingBytes(PacketType::Connect),
        MALFORMED,
    );
}

#[test]
fn packet_identifier_zero() {
    // 3.1.1 [MQTT-2.3.1-1], 5.0 [MQTT-2.2.1-3]
    for v in [V3_1_1, V5] {
        reject(
            v,
            b"\x32\x07\x00\x03a/b\x00\x00",
            DecodeError::ZeroPacketId,
            MALFORMED,
        );
        reject(v, b"\x40\x02\x00\x00", DecodeError::ZeroPacketId, MALFORMED);
        reject(
            v,
            b"\x82\x08\x00\x00\x00\x03a/b\x00",
            DecodeError::ZeroPacketId,
            MALFORMED,
        );
        reject(
            v,
            b"\xa2\x07\x00\x00\x00\x03a/b",
            DecodeError::ZeroPacketId,
            MALFORMED,
        );
    }
}

// ----- Strings and topics ---------------------------------------------------------------

#[test]
fn ill_formed_utf8() {
    // 3.1.1 [MQTT-1.5.3-1], 5.0 [MQTT-1.5.4-1]: invalid sequence, an encoded surrogate
    // U+D800, and an overlong encoding of '/'.
    for bad in [&b"\xc3\x28"[..], b"\xed\xa0\x80", b"\xc0\xaf"] {
        let mut body = vec![0, bad.len() as u8];
        body.extend_from_slice(bad);
        reject(
            V3_1_1,
            &frame(0x30, &body),
            DecodeError::InvalidString(StringError::InvalidUtf8),
            MALFORMED,
        );
    }
}

#[test]
fn null_character_in_a_string() {
    // 3.1.1 [MQTT-1.5.3-2], 5.0 [MQTT-1.5.4-2]; topics [MQTT-4.7.3-2].
    reject(
        V3_1_1,
        b"\x30\x05\x00\x03a\x00b",
        DecodeError::InvalidString(StringError::NullCharacter),
        MALFORMED,
    );
    let b = connect(b"MQTT", 5, 0x02, b"\x00\x00\x02c\x00");
    reject(
        V5,
        &b,
        DecodeError::InvalidString(StringError::NullCharacter),
        MALFORMED,
    );
}

#[test]
fn byte_order_mark_is_kept() {
    // 3.1.1 [MQTT-1.5.3-3], 5.0 [MQTT-1.5.4-3]: U+FEFF is not skipped or stripped.
    let mut buf = BytesMut::from(&b"\x30\x06\x00\x04\xef\xbb\xbfa"[..]);
    let Ok(Some(Packet::Publish(p))) = Decoder::client(V3_1_1).decode(&mut buf) else {
        panic!("expected PUBLISH");
    };
    assert_eq!(p.topic.as_str(), "\u{feff}a");
}

#[test]
fn wildcards_in_topic_name() {
    // [MQTT-3.3.2-2], 3.1.1 [MQTT-4.7.1-1], 5.0 [MQTT-4.7.0-1]
    for name in [&b"a/+"[..], b"#", b"a/#/b"] {
        let mut body = vec![0, name.len() as u8];
        body.extend_from_slice(name);
        reject(
            V3_1_1,
            &frame(0x30, &body),
            DecodeError::InvalidTopicName(TopicError::WildcardInName),
            ReasonCode::TopicNameInvalid,
        );
    }
    // The Will Topic too.
    let b = connect(b"MQTT", 4, 0x06, b"\x00\x01c\x00\x01#\x00\x00");
    reject(
        V3_1_1,
        &b,
        DecodeError::InvalidTopicName(TopicError::WildcardInName),
        ReasonCode::TopicNameInvalid,
    );
}

#[test]
fn empty_topic_name() {
    // [MQTT-4.7.3-1]; in 5.0 only a Topic Alias may stand in for it.
    reject(
        V3_1_1,
        b"\x30\x02\x00\x00",
        DecodeError::InvalidTopicName(TopicError::Empty),
        ReasonCode::TopicNameInvalid,
    );
    reject(
        V5,
        b"\x30\x03\x00\x00\x00",
        DecodeError::EmptyTopicWithoutAlias,
        PROTOCOL,
    );
}

#[test]
fn topic_filter_syntax() {
    // '#' last and alone: 3.1.1 [MQTT-4.7.1-2], 5.0 [MQTT-4.7.1-1]. '+' alone in its
    // level: 3.1.1 [MQTT-4.7.1-3], 5.0 [MQTT-4.7.1-2]. Not empty: [MQTT-4.7.3-1].
    let cases: [(&[u8], TopicError); 6] = [
        (b"a/#/b", TopicError::MultiLevelWildcard),
        (b"a#", TopicError::MultiLevelWildcard),
        (b"a/b#", TopicError::MultiLevelWildcard),
        (b"a+/b", TopicError::SingleLevelWildcard),
        (b"a/+b", TopicError::SingleLevelWildcard),
        (b"", TopicError::Empty),
    ];
    for (f, e) in cases {
        for v in [V3_1_1, V5] {
            let mut body = vec![0, 1];
            if v == V5 {
                body.push(0);
            }
            body.extend_from_slice(&[0, f.len() as u8]);
            body.extend_from_slice(f);
            let mut sub = body.clone();
            sub.push(0);
            reject(
                v,
                &frame(0x82, &sub),
                DecodeError::InvalidTopicFilter(e),
                ReasonCode::TopicFilterInvalid,
            );
            reject(
                v,
                &frame(0xa2, &body),
                DecodeError::InvalidTopicFilter(e),
                ReasonCode::TopicFilterInvalid,
            );
        }
    }
}

#[test]
fn shared_subscription_syntax() {
    // [MQTT-4.8.2-1] share name at least one character; [MQTT-4.8.2-2] no '/', '+', '#'.
    for f in [
        &b"$share//a"[..],
        b"$share/g+/a",
        b"$share/g#/a",
        b"$share/g",
        b"$share/g/",
    ] {
        let mut body = vec![0, 1, 0, 0, f.len() as u8];
        body.extend_from_slice(f);
        body.push(0);
        let err = Decoder::client(V5)
            .decode(&mut BytesMut::from(&frame(0x82, &body)[..]))
            .unwrap_err();
        assert!(
            matches!(err, DecodeError::InvalidTopicFilter(_)),
            "{:?} -> {err:?}",
            String::from_utf8_lossy(f)
        );
    }
}

// ----- SUBSCRIBE / UNSUBSCRIBE ----------------------------------------------------------

#[test]
fn subscribe_and_unsubscribe_need_a_filter() {
    // 3.1.1 [MQTT-3.8.3-3], 5.0 [MQTT-3.8.3-2], [MQTT-3.10.3-2]: a SUBSCRIBE or
    // UNSUBSCRIBE with no payload is a Protocol Error (0x82), not a Malformed Packet.
    reject(
        V3_1_1,
        b"\x82\x02\x00\x01",
        DecodeError::NoTopicFilters(PacketType::Subscribe),
        ReasonCode::ProtocolError,
    );
    reject(
        V5,
        b"\x82\x03\x00\x01\x00",
        DecodeError::NoTopicFilters(PacketType::Subscribe),
        ReasonCode::ProtocolError,
    );
    reject(
        V3_1_1,
        b"\xa2\x02\x00\x01",
        DecodeError::NoTopicFilters(PacketType::Unsubscribe),
        ReasonCode::ProtocolError,
    );
    reject(
        V5,
        b"\xa2\x03\x00\x01\x00",
        DecodeError::NoTopicFilters(PacketType::Unsubscribe),
        ReasonCode::ProtocolError,
    );
}

#[test]
fn subscription_options_reserved_bits() {
    // 3.1.1 [MQTT-3.8.3-4]: bits 7-2 reserved.
    for o in [0x04u8, 0x08, 0x10, 0x80] {
        reject(
            V3_1_1,
            &frame(0x82, &[0, 1, 0, 1, b'a', o]),
            DecodeError::SubscriptionOptionsReserved,
            MALFORMED,
        );
    }
    // 5.0 [MQTT-3.8.3-5]: bits 7-6 reserved.
    for o in [0x40u8, 0x80] {
        reject(
            V5,
            &frame(0x82, &[0, 1, 0, 0, 1, b'a', o]),
            DecodeError::SubscriptionOptionsReserved,
            MALFORMED,
        );
    }
    // Requested QoS 3 (3.1.1 [MQTT-3.8.3-4]).
    reject(
        V3_1_1,
        &frame(0x82, &[0, 1, 0, 1, b'a', 3]),
        DecodeError::InvalidQoS,
        MALFORMED,
    );
    reject(
        V5,
        &frame(0x82, &[0, 1, 0, 0, 1, b'a', 3]),
        DecodeError::InvalidQoS,
        MALFORMED,
    );
    // Retain Handling 3 is a Protocol Error.
    reject(
        V5,
        &frame(0x82, &[0, 1, 0, 0, 1, b'a', 0x30]),
        DecodeError::InvalidRetainHandling,
        PROTOCOL,
    );
}

#[test]
fn no_local_on_shared_subscription() {
    // 5.0 [MQTT-3.8.3-4]
    let mut body = vec![0, 1, 0, 0, 11];
    body.extend_from_slice(b"$share/g/a/");
    body.pop();
    body[4] = 10;
    body.push(0x04);
    reject(
        V5,
        &frame(0x82, &body),
        DecodeError::NoLocalOnSharedSubscription,
        PROTOCOL,
    );
}

// ----- Reason codes ---------------------------------------------------------------------

#[test]
fn reason_codes_not_defined_for_the_packet() {
    // CONNACK 5.0 [MQTT-3.2.2-8], PUBACK 5.0 [MQTT-3.4.2-1], PUBREC 5.0 [MQTT-3.5.2-1],
    // PUBREL 5.0 [MQTT-3.6.2-1], PUBCOMP 5.0 [MQTT-3.7.2-1], SUBACK 5.0 [MQTT-3.9.3-2],
    // UNSUBACK 5.0 [MQTT-3.11.3-2], DISCONNECT 5.0 [MQTT-3.14.2-1], AUTH 5.0 [MQTT-3.15.2-1].
    let cases: [(&[u8], PacketType, u8); 9] = [
        (b"\x20\x03\x00\x04\x00", PacketType::ConnAck, 0x04),
        (b"\x40\x03\x00\x01\x92", PacketType::PubAck, 0x92),
        (b"\x50\x03\x00\x01\x04", PacketType::PubRec, 0x04),
        (b"\x62\x03\x00\x01\x80", PacketType::PubRel, 0x80),
        (b"\x70\x03\x00\x01\x10", PacketType::PubComp, 0x10),
        (b"\x90\x04\x00\x01\x00\x03", PacketType::SubAck, 0x03),
        (b"\xb0\x04\x00\x01\x00\x02", PacketType::UnsubAck, 0x02),
        (b"\xe0\x01\x18", PacketType::Disconnect, 0x18),
        (b"\xf0\x01\x04", PacketType::Auth, 0x04),
    ];
    for (bytes, packet, code) in cases {
        reject(
            V5,
            bytes,
            DecodeError::InvalidReasonCode { packet, code },
            MALFORMED,
        );
    }
    // 3.1.1 [MQTT-3.9.3-2]: SUBACK return codes other than 0, 1, 2 and 0x80 are reserved.
    reject(
        V3_1_1,
        b"\x90\x03\x00\x01\x03",
        DecodeError::InvalidReasonCode {
            packet: PacketType::SubAck,
            code: 3,
        },
        MALFORMED,
    );
    // CONNACK return codes above 5.
    reject(
        V3_1_1,
        b"\x20\x02\x00\x06",
        DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code: 6,
        },
        MALFORMED,
    );
    // SUBACK and 5.0 UNSUBACK carry at least one code.
    reject(
        V3_1_1,
        b"\x90\x02\x00\x01",
        DecodeError::NoReasonCodes(PacketType::SubAck),
        MALFORMED,
    );
    reject(
        V5,
        b"\xb0\x03\x00\x01\x00",
        DecodeError::NoReasonCodes(PacketType::UnsubAck),
        MALFORMED,
    );
}

// ----- CONNECT and CONNACK --------------------------------------------------------------

#[test]
fn protocol_name_and_level() {
    // [MQTT-3.1.2-1]: an unknown protocol name.
    let b = connect(b"MQTX", 4, 0x02, b"\x00\x01c");
    reject_with(
        Decoder::server(),
        &b,
        DecodeError::InvalidProtocolName,
        ReasonCode::UnsupportedProtocolVersion,
    );
    // [MQTT-3.1.2-2]: a level this codec does not speak is refused with CONNACK 0x84
    // (0x01 in 3.1.1).
    for (name, level) in [(&b"MQTT"[..], 6u8), (b"MQTT", 3), (b"MQIsdp", 4)] {
        let b = connect(name, level, 0x02, b"\x00\x01c");
        let mut buf = BytesMut::from(&b[..]);
        let err = Decoder::server().decode(&mut buf).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedProtocolVersion(level));
        assert_eq!(
            err.connack_refusal(),
            Some(ReasonCode::UnsupportedProtocolVersion)
        );
        assert_eq!(ReasonCode::UnsupportedProtocolVersion.v3_connack_code(), 1);
    }
}

#[test]
fn connect_reserved_flag() {
    // [MQTT-3.1.2-3]
    for (name, level) in [(&b"MQIsdp"[..], 3u8), (b"MQTT", 4), (b"MQTT", 5)] {
        let b = connect(name, level, 0x03, b"\x00\x00\x01c");
        reject_with(
            Decoder::server(),
            &b,
            DecodeError::ConnectReservedFlag,
            MALFORMED,
        );
    }
}

#[test]
fn will_flags_without_will() {
    // Will QoS without the Will Flag: 3.1.1 [MQTT-3.1.2-13], 3.1.1 [MQTT-3.1.2-11],
    // 5.0 [MQTT-3.1.2-11]. Will Retain without it: 3.1.1 [MQTT-3.1.2-15],
    // 5.0 [MQTT-3.1.2-13].
    for (level, rest) in [(4u8, &b"\x00\x01c"[..]), (5, b"\x00\x00\x01c")] {
        for flags in [0x02 | 0x08, 0x02 | 0x10, 0x02 | 0x20] {
            let b = connect(b"MQTT", level, flags, rest);
            reject_with(
                Decoder::server(),
                &b,
                DecodeError::WillFlagsWithoutWill,
                MALFORMED,
            );
        }
    }
}

#[test]
fn will_qos_3() {
    // 3.1.1 [MQTT-3.1.2-14], 5.0 [MQTT-3.1.2-12]
    let b = connect(
        b"MQTT",
        4,
        0x02 | 0x04 | 0x18,
        b"\x00\x01c\x00\x01w\x00\x00",
    );
    reject_with(Decoder::server(), &b, DecodeError::InvalidQoS, MALFORMED);
    let b = connect(
        b"MQTT",
        5,
        0x02 | 0x04 | 0x18,
        b"\x00\x00\x01c\x00\x00\x01w\x00\x00",
    );
    reject_with(Decoder::server(), &b, DecodeError::InvalidQoS, MALFORMED);
}

#[test]
fn password_without_username() {
    // 3.1.1 [MQTT-3.1.2-22]; 3.1 has the same rule.
    for (name, level) in [(&b"MQIsdp"[..], 3u8), (b"MQTT", 4)] {
        let b = connect(name, level, 0x42, b"\x00\x01c\x00\x01p");
        reject_with(
            Decoder::server(),
            &b,
            DecodeError::PasswordWithoutUsername,
            MALFORMED,
        );
    }
    // 5.0 allows a password alone (for extended authentication schemes).
    let b = connect(b"MQTT", 5, 0x42, b"\x00\x00\x01c\x00\x01p");
    let Ok(Some(Packet::Connect(c))) = Decoder::server().decode(&mut BytesMut::from(&b[..])) else {
        panic!("5.0 CONNECT with a password alone decodes");
    };
    assert_eq!(c.username, None);
    assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
}

#[test]
fn client_identifier_rules() {
    // 3.1.1 [MQTT-3.1.3-7], 3.1.1 [MQTT-3.1.3-8]: an empty client id needs Clean Session 1, else
    // CONNACK 0x02.
    let b = connect(b"MQTT", 4, 0x00, b"\x00\x00");
    let mut buf = BytesMut::from(&b[..]);
    let err = Decoder::server().decode(&mut buf).unwrap_err();
    assert_eq!(err, DecodeError::InvalidClientId);
    assert_eq!(err.reason_code(), ReasonCode::ClientIdentifierNotValid);
    assert_eq!(
        err.connack_refusal(),
        Some(ReasonCode::ClientIdentifierNotValid)
    );
    assert_eq!(ReasonCode::ClientIdentifierNotValid.v3_connack_code(), 2);
    // 3.1.1 [MQTT-3.1.3-6]: with Clean Session 1 it is accepted (the server assigns one).
    let b = connect(b"MQTT", 4, 0x02, b"\x00\x00");
    assert!(Decoder::server()
        .decode(&mut BytesMut::from(&b[..]))
        .unwrap()
        .is_some());
    // 5.0 [MQTT-3.1.3-6]: an empty client id is accepted with any Clean Start.
    let b = connect(b"MQTT", 5, 0x00, b"\x00\x00\x00");
    assert!(Decoder::server()
        .decode(&mut BytesMut::from(&b[..]))
        .unwrap()
        .is_some());
    // 3.1: 1 to 23 characters.
    let b = connect(b"MQIsdp", 3, 0x02, b"\x00\x00");
    reject_with(
        Decoder::server(),
        &b,
        DecodeError::InvalidClientId,
        ReasonCode::ClientIdentifierNotValid,
    );
    let mut rest = vec![0, 24];
    rest.extend_from_slice(&[b'x'; 24]);
    let b = connect(b"MQIsdp", 3, 0x02, &rest);
    reject_with(
        Decoder::server(),
        &b,
        DecodeError::InvalidClientId,
        ReasonCode::ClientIdentifierNotValid,
    );
    // 3.1.1 [MQTT-3.1.3-5]: 1..23 of 0-9a-zA-Z is always allowed; longer ids are too.
    let mut rest = vec![0, 64];
    rest.extend_from_slice(&[b'Z'; 64]);
    let b = connect(b"MQTT", 4, 0x00, &rest);
    assert!(Decoder::server()
        .decode(&mut BytesMut::from(&b[..]))
        .unwrap()
        .is_some());
}

#[test]
fn connack_reserved_flags_and_session_present() {
    // 5.0 [MQTT-3.2.2-1]: acknowledge flags bits 7-1 reserved.
    reject(
        V5,
        b"\x20\x03\x02\x00\x00",
        DecodeError::ConnAckReservedFlags,
        MALFORMED,
    );
    reject(
        V3_1_1,
        b"\x20\x02\x80\x00",
        DecodeError::ConnAckReservedFlags,
        MALFORMED,
    );
    // Session Present with a refusal: 3.1.1 [MQTT-3.2.2-4], 5.0 [MQTT-3.2.2-6].
    reject(
        V3_1_1,
        b"\x20\x02\x01\x05",
        DecodeError::SessionPresentOnRefusal,
        PROTOCOL,
    );
    reject(
        V5,
        b"\x20\x03\x01\x87\x00",
        DecodeError::SessionPresentOnRefusal,
        PROTOCOL,
    );
}

// ----- Properties -----------------------------------------------------------------------

/// A v5 PUBLISH QoS 0 to "a" with these properties.
fn publish_with(props: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 1, b'a', props.len() as u8];
    body.extend_from_slice(props);
    frame(0x30, &body)
}

#[test]
fn unknown_property() {
    reject(
        V5,
        &publish_with(b"\x05\x00"),
        DecodeError::UnknownProperty(5),
        MALFORMED,
    );
    reject(
        V5,
        &publish_with(b"\x7f\x00"),
        DecodeError::UnknownProperty(0x7f),
        MALFORMED,
    );
}

#[test]
fn property_not_allowed_on_the_packet() {
    let cases: [(Vec<u8>, PropertyId, PacketType); 5] = [
        (
            publish_with(b"\x11\x00\x00\x00\x01"),
            PropertyId::SessionExpiryInterval,
            PacketType::Publish,
        ),
        (
            publish_with(b"\x1f\x00\x01x"),
            PropertyId::ReasonString,
            PacketType::Publish,
        ),
        (
            b"\x40\x07\x00\x01\x00\x03\x23\x00\x01".to_vec(),
            PropertyId::TopicAlias,
            PacketType::PubAck,
        ),
        (
            b"\xe0\x05\x00\x03\x21\x00\x01".to_vec(),
            PropertyId::ReceiveMaximum,
            PacketType::Disconnect,
        ),
        (
            b"\xa2\x0a\x00\x01\x02\x0b\x01\x00\x03a/b".to_vec(),
            PropertyId::SubscriptionIdentifier,
            PacketType::Unsubscribe,
        ),
    ];
    for (bytes, property, packet) in cases {
        let bytes = fix_len(bytes);
        reject(
            V5,
            &bytes,
            DecodeError::PropertyNotAllowed { property, packet },
            MALFORMED,
        );
    }
}

fn fix_len(mut b: Vec<u8>) -> Vec<u8> {
    b[1] = (b.len() - 2) as u8;
    b
}

#[test]
fn duplicate_property_is_a_protocol_error() {
    reject(
        V5,
        &publish_with(b"\x02\x00\x00\x00\x01\x02\x00\x00\x00\x02"),
        DecodeError::DuplicateProperty(PropertyId::MessageExpiryInterval),
        PROTOCOL,
    );
    reject(
        V5,
        &publish_with(b"\x03\x00\x01a\x03\x00\x01b"),
        DecodeError::DuplicateProperty(PropertyId::ContentType),
        PROTOCOL,
    );
    // User Property and (in PUBLISH) Subscription Identifier may repeat.
    let mut buf = BytesMut::from(
        &publish_with(b"\x26\x00\x01k\x00\x01v\x26\x00\x01k\x00\x01v\x0b\x01\x0b\x02")[..],
    );
    let Ok(Some(Packet::Publish(p))) = Decoder::client(V5).decode(&mut buf) else {
        panic!("repeatable properties decode");
    };
    assert_eq!(p.properties.user_properties.len(), 2);
    assert_eq!(p.properties.subscription_identifiers.len(), 2);
    // Subscription Identifier may appear once in SUBSCRIBE.
    reject(
        V5,
        &fix_len(b"\x82\x00\x00\x01\x04\x0b\x01\x0b\x02\x00\x01a\x00".to_vec()),
        DecodeError::DuplicateProperty(PropertyId::SubscriptionIdentifier),
        PROTOCOL,
    );
}

#[test]
fn property_values_out_of_range() {
    // Payload Format Indicator 2.
    reject(
        V5,
        &publish_with(b"\x01\x02"),
        DecodeError::InvalidPropertyValue(PropertyId::PayloadFormatIndicator),
        PROTOCOL,
    );
    // [MQTT-3.3.2-8]: Topic Alias 0.
    reject(
        V5,
        &publish_with(b"\x23\x00\x00"),
        DecodeError::TopicAliasZero,
        ReasonCode::TopicAliasInvalid,
    );
    // [MQTT-3.3.2-14]: a Response Topic is a topic name, without wildcards.
    reject(
        V5,
        &publish_with(b"\x08\x00\x01#"),
        DecodeError::InvalidPropertyValue(PropertyId::ResponseTopic),
        PROTOCOL,
    );
    // Subscription Identifier 0.
    reject(
        V5,
        &fix_len(b"\x82\x00\x00\x01\x02\x0b\x00\x00\x01a\x00".to_vec()),
        DecodeError::InvalidPropertyValue(PropertyId::SubscriptionIdentifier),
        PROTOCOL,
    );
    // CONNECT: Receive Maximum 0, Maximum Packet Size 0, Request Problem Information 2.
    for (props, id) in [
        (&b"\x03\x21\x00\x00"[..], PropertyId::ReceiveMaximum),
        (b"\x05\x27\x00\x00\x00\x00", PropertyId::MaximumPacketSize),
        (b"\x02\x17\x02", PropertyId::RequestProblemInformation),
        (b"\x02\x19\x05", PropertyId::RequestResponseInformation),
    ] {
        let mut rest = props.to_vec();
        rest.extend_from_slice(b"\x00\x01c");
        reject_with(
            Decoder::server(),
            &connect(b"MQTT", 5, 0x02, &rest),
            DecodeError::InvalidPropertyValue(id),
            PROTOCOL,
        );
    }
    // CONNACK: Maximum QoS 2, Retain Available 2.
    reject(
        V5,
        b"\x20\x05\x00\x00\x02\x24\x02",
        DecodeError::InvalidPropertyValue(PropertyId::MaximumQoS),
        PROTOCOL,
    );
    reject(
        V5,
        b"\x20\x05\x00\x00\x02\x25\x02",
        DecodeError::InvalidPropertyValue(PropertyId::RetainAvailable),
        PROTOCOL,
    );
}

#[test]
fn user_property_strings_are_checked() {
    // 5.0 [MQTT-1.5.7-1]: both strings of a pair are UTF-8 Encoded Strings.
    reject(
        V5,
        &publish_with(b"\x26\x00\x01k\x00\x01\x00"),
        DecodeError::InvalidString(StringError::NullCharacter),
        MALFORMED,
    );
}

#[test]
fn authentication_data_without_method() {
    let mut rest = b"\x04\x16\x00\x01x".to_vec();
    rest.extend_from_slice(b"\x00\x01c");
    reject_with(
        Decoder::server(),
        &connect(b"MQTT", 5, 0x02, &rest),
        DecodeError::AuthDataWithoutMethod,
        PROTOCOL,
    );
    reject(
        V5,
        b"\xf0\x06\x18\x04\x16\x00\x01x",
        DecodeError::AuthDataWithoutMethod,
        PROTOCOL,
    );
}

#[test]
fn connect_payload_fields_follow_their_flags() {
    // Payload order: client id, will (properties,) topic, payload, user name, password:
    // [MQTT-3.1.3-1], [MQTT-3.1.3-3]. A flag set with its field missing runs past the
    // packet; a field present with its flag clear is left over.
    // Will: 3.1.1 [MQTT-3.1.2-9], 5.0 [MQTT-3.1.2-9]. User name: 3.1.1 [MQTT-3.1.2-18],
    // 3.1.1 [MQTT-3.1.2-19], 5.0 [MQTT-3.1.2-16], 5.0 [MQTT-3.1.2-17]. Password:
    // 3.1.1 [MQTT-3.1.2-20], 3.1.1 [MQTT-3.1.2-21], 5.0 [MQTT-3.1.2-18],
    // 5.0 [MQTT-3.1.2-19].
    let truncated = DecodeError::Truncated(PacketType::Connect);
    let trailing = DecodeError::TrailingBytes(PacketType::Connect);
    for (level, props) in [(4u8, &b""[..]), (5, b"\x00")] {
        let with = |flags: u8, payload: &[u8]| {
            let mut rest = props.to_vec();
            rest.extend_from_slice(b"\x00\x01c");
            if flags & 0x04 != 0 {
                rest.extend_from_slice(props);
            }
            rest.extend_from_slice(payload);
            connect(b"MQTT", level, flags, &rest)
        };
        let cases: [(u8, &[u8], DecodeError); 6] = [
            (0x06, b"", truncated.clone()),
            (0x06, b"\x00\x01w", truncated.clone()),
            (0x82, b"", truncated.clone()),
            (0xc2, b"\x00\x01u", truncated.clone()),
            (0x02, b"\x00\x01u", trailing.clone()),
            (0x82, b"\x00\x01u\x00\x01p", trailing.clone()),
        ];
        for (flags, payload, err) in cases {
            reject_with(Decoder::server(), &with(flags, payload), err, MALFORMED);
        }
        let ok = with(0xc6, b"\x00\x01w\x00\x00\x00\x01u\x00\x01p");
        let Ok(Some(Packet::Connect(c))) = Decoder::server().decode(&mut BytesMut::from(&ok[..]))
        else {
            panic!("CONNECT with every field decodes");
        };
        assert_eq!(c.client_id.as_str(), "c");
        assert_eq!(c.will.as_ref().unwrap().topic.as_str(), "w");
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
    }
}

#[test]
fn every_string_field_is_utf8() {
    // Client id 3.1.1 [MQTT-3.1.3-4], 5.0 [MQTT-3.1.3-4]; will topic 3.1.1 [MQTT-3.1.3-10],
    // 5.0 [MQTT-3.1.3-11]; user name 3.1.1 [MQTT-3.1.3-11], 5.0 [MQTT-3.1.3-12]; PUBLISH
    // topic [MQTT-3.3.2-1]; SUBSCRIBE filters [MQTT-3.8.3-1]; UNSUBSCRIBE filters
    // [MQTT-3.10.3-1].
    let bad = DecodeError::InvalidString(StringError::InvalidUtf8);
    let cases: [Vec<u8>; 6] = [
        connect(b"MQTT", 4, 0x02, b"\x00\x01\xff"),
        connect(b"MQTT", 4, 0x06, b"\x00\x01c\x00\x01\xff\x00\x00"),
        connect(b"MQTT", 4, 0x82, b"\x00\x01c\x00\x01\xff"),
        frame(0x30, b"\x00\x01\xff"),
        frame(0x82, b"\x00\x01\x00\x01\xff\x00"),
        frame(0xa2, b"\x00\x01\x00\x01\xff"),
    ];
    for bytes in cases {
        let mut d = Decoder::client(V3_1_1);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(d.decode(&mut buf), Err(bad.clone()), "{bytes:02x?}");
    }
}

#[test]
fn empty_property_list_is_a_zero_length() {
    // 5.0 [MQTT-2.2.2-1]: no properties is written as a Property Length of 0.
    let mut buf = BytesMut::new();
    Packet::Publish(Publish::new(TopicName::new("t").unwrap(), "x"))
        .encode(&mut buf, V5, MAX_PACKET_SIZE)
        .unwrap();
    assert_eq!(&buf[..], b"\x30\x05\x00\x01t\x00x");
}
