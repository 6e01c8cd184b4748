//! The encoder: exact lengths, all-or-nothing against the maximum packet size, and refusal
//! of packets that cannot be sent.

#![allow(clippy::field_reassign_with_default)]

use bytes::{Bytes, BytesMut};
use mqtt_proto::*;
use std::num::{NonZeroU16, NonZeroU32};
use ProtocolVersion::{V3_1, V3_1_1, V5};

fn publish(payload: usize) -> Publish {
    Publish::new(TopicName::new("a/b").unwrap(), vec![7u8; payload])
}

#[test]
fn all_or_nothing_against_maximum_packet_size() {
    // 5.0 [MQTT-3.1.2-24]: a packet larger than the peer's Maximum Packet Size is not
    // sent; nothing is written.
    let p = Packet::Publish(publish(100));
    let size = p.encoded_len(V5);
    let mut buf = BytesMut::from(&b"prefix"[..]);
    assert_eq!(
        p.encode(&mut buf, V5, size as u32 - 1),
        Err(EncodeError::PacketTooLarge {
            size,
            max: size as u32 - 1
        })
    );
    assert_eq!(&buf[..], b"prefix");
    assert_eq!(p.encode(&mut buf, V5, size as u32), Ok(size));
    assert_eq!(buf.len(), 6 + size);
}

#[test]
fn encoded_len_is_exact_across_length_boundaries() {
    // Remaining lengths that need 1, 2, 3 and 4 bytes.
    for payload in [
        0, 120, 121, 122, 16_376, 16_377, 16_378, 2_097_140, 2_097_146,
    ] {
        for v in [V3_1_1, V5] {
            // With and without a packet identifier and properties, which the encoder
            // writes in different ways.
            for (qos, props) in [(0, false), (1, false), (0, true), (1, true)] {
                let mut p = publish(payload);
                if qos == 1 {
                    p.qos = QoS::AtLeastOnce;
                    p.packet_id = NonZeroU16::new(0x0102);
                }
                if props && v == V5 {
                    p.properties.content_type = Some(MqttString::new("text").unwrap());
                }
                let p = Packet::Publish(p);
                let mut buf = BytesMut::from(&b"x"[..]);
                let n = p.encode(&mut buf, v, MAX_PACKET_SIZE).unwrap();
                assert_eq!(n + 1, buf.len());
                assert_eq!(n, p.encoded_len(v));
                let _ = buf.split_to(1);
                let back = Decoder::client(v).decode(&mut buf).unwrap();
                assert_eq!(back, Some(p));
            }
        }
    }
}

#[test]
fn packet_id_must_match_qos() {
    // 5.0 [MQTT-2.2.1-2]: a QoS 0 PUBLISH has no packet identifier; QoS 1 and 2 have one.
    let mut p = publish(1);
    p.packet_id = NonZeroU16::new(1);
    let mut buf = BytesMut::new();
    assert_eq!(
        Packet::Publish(p.clone()).encode(&mut buf, V3_1_1, MAX_PACKET_SIZE),
        Err(EncodeError::PacketIdMismatch)
    );
    p.packet_id = None;
    p.qos = QoS::AtLeastOnce;
    assert_eq!(
        Packet::Publish(p).encode(&mut buf, V3_1_1, MAX_PACKET_SIZE),
        Err(EncodeError::PacketIdMismatch)
    );
    let mut p = publish(1);
    p.dup = true;
    assert_eq!(
        Packet::Publish(p).encode(&mut buf, V3_1_1, MAX_PACKET_SIZE),
        Err(EncodeError::DupOnQoS0)
    );
    assert!(buf.is_empty());
}

#[test]
fn auth_only_in_v5() {
    let mut buf = BytesMut::new();
    for v in [V3_1, V3_1_1] {
        assert_eq!(
            Packet::Auth(Auth::default()).encode(&mut buf, v, MAX_PACKET_SIZE),
            Err(EncodeError::NotInVersion {
                packet: PacketType::Auth,
                version: v
            })
        );
    }
}

#[test]
fn empty_topic_only_with_alias_in_v5() {
    let p = Publish::new(TopicName::empty(), "x");
    let mut buf = BytesMut::new();
    assert_eq!(
        Packet::Publish(p.clone()).encode(&mut buf, V5, MAX_PACKET_SIZE),
        Err(EncodeError::EmptyTopic)
    );
    let mut aliased = p;
    aliased.properties.topic_alias = NonZeroU16::new(3);
    assert_eq!(
        Packet::Publish(aliased.clone()).encode(&mut buf, V3_1_1, MAX_PACKET_SIZE),
        Err(EncodeError::EmptyTopic)
    );
    assert!(Packet::Publish(aliased)
        .encode(&mut buf, V5, MAX_PACKET_SIZE)
        .is_ok());
}

#[test]
fn invalid_values_are_not_sent() {
    let mut buf = BytesMut::new();
    let mut c = ConnAck::default();
    c.properties.maximum_qos = Some(QoS::ExactlyOnce);
    assert_eq!(
        Packet::ConnAck(Box::new(c)).encode(&mut buf, V5, MAX_PACKET_SIZE),
        Err(EncodeError::InvalidPropertyValue(PropertyId::MaximumQoS))
    );
    let mut p = publish(0);
    p.properties.subscription_identifiers = vec![NonZeroU32::new(MAX_VAR_INT + 1).unwrap()];
    assert_eq!(
        Packet::Publish(p).encode(&mut buf, V5, MAX_PACKET_SIZE),
        Err(EncodeError::InvalidPropertyValue(
            PropertyId::SubscriptionIdentifier
        ))
    );
    let mut p = publish(0);
    p.properties.correlation_data = Some(Bytes::from(vec![0; 65_536]));
    assert_eq!(
        Packet::Publish(p).encode(&mut buf, V5, MAX_PACKET_SIZE),
        Err(EncodeError::InvalidPropertyValue(
            PropertyId::CorrelationData
        ))
    );
    let r = PubResponse {
        reason_code: ReasonCode::Banned,
        ..PubResponse::new(NonZeroU16::new(1).unwrap())
    };
    assert_eq!(
        Packet::PubAck(r).encode(&mut buf, V5, MAX_PACKET_SIZE),
        Err(EncodeError::InvalidReasonCode {
            packet: PacketType::PubAck,
            code: ReasonCode::Banned
        })
    );
    let mut c = Connect::new(V3_1_1, MqttString::new("c").unwrap());
    c.password = Some(Bytes::from_static(b"p"));
    assert_eq!(
        Packet::Connect(Box::new(c)).encode(&mut buf, V3_1_1, MAX_PACKET_SIZE),
        Err(EncodeError::PasswordWithoutUsername)
    );
    assert_eq!(
        Packet::Subscribe(Subscribe {
            packet_id: NonZeroU16::new(1).unwrap(),
            properties: Default::default(),
            subscriptions: vec![]
        })
        .encode(&mut buf, V5, MAX_PACKET_SIZE),
        Err(EncodeError::Empty(PacketType::Subscribe))
    );
    assert!(buf.is_empty());
}

#[test]
fn v5_only_fields_are_left_out_for_v3() {
    let mut p = publish(2);
    p.properties.message_expiry_interval = Some(10);
    p.properties.user_properties =
        vec![(MqttString::new("k").unwrap(), MqttString::new("v").unwrap())];
    let mut buf = BytesMut::new();
    Packet::Publish(p)
        .encode(&mut buf, V3_1_1, MAX_PACKET_SIZE)
        .unwrap();
    assert_eq!(&buf[..], b"\x30\x07\x00\x03a/b\x07\x07");

    // SUBACK failures are 0x80 in 3.1.1 (3.1.1 [MQTT-3.9.3-2]); CONNACK refusals map to
    // the six 3.1.1 return codes.
    let s = SubAck {
        packet_id: NonZeroU16::new(1).unwrap(),
        properties: Default::default(),
        reason_codes: vec![ReasonCode::GrantedQoS1, ReasonCode::QuotaExceeded],
    };
    buf.clear();
    Packet::SubAck(s)
        .encode(&mut buf, V3_1_1, MAX_PACKET_SIZE)
        .unwrap();
    assert_eq!(&buf[..], b"\x90\x04\x00\x01\x01\x80");
    for (reason, code) in [
        (ReasonCode::Banned, 5),
        (ReasonCode::BadAuthenticationMethod, 5),
        (ReasonCode::ServerBusy, 3),
        (ReasonCode::BadUserNameOrPassword, 4),
    ] {
        buf.clear();
        let c = ConnAck {
            reason_code: reason,
            ..Default::default()
        };
        Packet::ConnAck(Box::new(c))
            .encode(&mut buf, V3_1_1, MAX_PACKET_SIZE)
            .unwrap();
        assert_eq!(&buf[..], &[0x20, 2, 0, code]);
    }
}

#[test]
fn connect_is_encoded_in_its_own_version() {
    let c = Packet::Connect(Box::new(Connect::new(
        V3_1,
        MqttString::new("abc").unwrap(),
    )));
    let mut buf = BytesMut::new();
    c.encode(&mut buf, V5, MAX_PACKET_SIZE).unwrap();
    assert_eq!(&buf[2..10], b"\x00\x06MQIsdp");
    assert_eq!(buf[10], 3);
}

#[test]
fn encoder_refuses_what_the_decoder_would_reject() {
    let mut buf = BytesMut::new();
    let enc = |p: Packet, v: ProtocolVersion| {
        let mut b = BytesMut::new();
        p.encode(&mut b, v, MAX_PACKET_SIZE).map(|_| b)
    };
    // Client identifier rules: 3.1.1 [MQTT-3.1.3-7]; 3.1 needs 1 to 23 bytes.
    let mut c = Connect::new(V3_1_1, MqttString::empty());
    c.clean_start = false;
    assert_eq!(
        enc(Packet::Connect(Box::new(c)), V3_1_1),
        Err(EncodeError::InvalidClientId)
    );
    for id in ["", "abcdefghijklmnopqrstuvwx"] {
        let c = Connect::new(V3_1, MqttString::new(id).unwrap());
        assert_eq!(
            enc(Packet::Connect(Box::new(c)), V3_1),
            Err(EncodeError::InvalidClientId)
        );
    }
    // Authentication Data needs an Authentication Method.
    let mut c = Connect::new(V5, MqttString::new("c").unwrap());
    c.properties.authentication_data = Some(Bytes::from_static(b"d"));
    assert_eq!(
        enc(Packet::Connect(Box::new(c)), V5),
        Err(EncodeError::AuthDataWithoutMethod)
    );
    let mut a = Auth::default();
    a.properties.authentication_data = Some(Bytes::from_static(b"d"));
    assert_eq!(
        enc(Packet::Auth(a), V5),
        Err(EncodeError::AuthDataWithoutMethod)
    );
    // Session Present with a refusal: 3.1.1 [MQTT-3.2.2-4], 5.0 [MQTT-3.2.2-6].
    for v in [V3_1_1, V5] {
        let c = ConnAck {
            session_present: true,
            reason_code: ReasonCode::NotAuthorized,
            ..Default::default()
        };
        assert_eq!(
            enc(Packet::ConnAck(Box::new(c)), v),
            Err(EncodeError::SessionPresentOnRefusal)
        );
    }
    // 3.1 has no Session Present flag: it is written as 0.
    let c = ConnAck {
        session_present: true,
        ..Default::default()
    };
    assert_eq!(
        &enc(Packet::ConnAck(Box::new(c)), V3_1).unwrap()[..],
        b"\x20\x02\x00\x00"
    );
    // No Local on a shared subscription: 5.0 [MQTT-3.8.3-4].
    let s = Subscribe {
        packet_id: NonZeroU16::new(1).unwrap(),
        properties: Default::default(),
        subscriptions: vec![Subscription {
            filter: TopicFilter::new("$share/g/a").unwrap(),
            options: SubscriptionOptions {
                no_local: true,
                ..Default::default()
            },
        }],
    };
    assert_eq!(
        enc(Packet::Subscribe(s), V5),
        Err(EncodeError::NoLocalOnSharedSubscription)
    );
    assert!(buf.is_empty());
    buf.clear();
}

#[test]
fn publish_encodes_alone_and_knows_where_its_packet_id_is() {
    for v in [V3_1, V3_1_1, V5] {
        let mut p = publish(300);
        p.qos = QoS::ExactlyOnce;
        p.packet_id = NonZeroU16::new(0x1234);
        p.properties.message_expiry_interval = Some(9);
        let mut a = BytesMut::new();
        let mut b = BytesMut::new();
        Packet::Publish(p.clone())
            .encode(&mut a, v, MAX_PACKET_SIZE)
            .unwrap();
        let n = p.encode(&mut b, v, MAX_PACKET_SIZE).unwrap();
        assert_eq!(a, b);
        assert_eq!(n, p.encoded_len(v));
        let at = p.packet_id_offset(v).unwrap();
        assert_eq!(&b[at..at + 2], &[0x12, 0x34]);
        p.qos = QoS::AtMostOnce;
        p.packet_id = None;
        assert_eq!(p.packet_id_offset(v), None);
    }
}
