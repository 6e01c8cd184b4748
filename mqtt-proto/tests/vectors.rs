//! Byte vectors for every packet type in every protocol version it exists in, laid out as
//! the figures of the specifications lay them out: each is decoded, compared with the
//! expected packet, and re-encoded to the same bytes.

#![allow(clippy::field_reassign_with_default)]

use bytes::{Bytes, BytesMut};
use mqtt_proto::*;
use std::num::{NonZeroU16, NonZeroU32};
use ProtocolVersion::{V3_1, V3_1_1, V5};

fn s(v: &str) -> MqttString {
    MqttString::new(v).unwrap()
}

fn topic(v: &str) -> TopicName {
    TopicName::new(v).unwrap()
}

fn filter(v: &str) -> TopicFilter {
    TopicFilter::new(v).unwrap()
}

fn pid(v: u16) -> PacketId {
    PacketId::new(v).unwrap()
}

/// Decodes `bytes` as one packet of `version`, checks it is `expected`, re-encodes it and
/// checks the bytes and `encoded_len`.
#[track_caller]
fn vector(version: ProtocolVersion, bytes: &[u8], expected: Packet) {
    let mut decoder = Decoder::client(version);
    let mut buf = BytesMut::from(bytes);
    let packet = decoder
        .decode(&mut buf)
        .unwrap()
        .expect("a complete packet");
    assert_eq!(packet, expected);
    assert!(buf.is_empty(), "the whole packet is consumed");
    let mut out = BytesMut::new();
    let n = packet.encode(&mut out, version, MAX_PACKET_SIZE).unwrap();
    assert_eq!(&out[..], bytes, "re-encoding gives the same bytes");
    assert_eq!(n, bytes.len());
    assert_eq!(packet.encoded_len(version), bytes.len());
    // Every proper prefix is "need more bytes", and consumes nothing.
    for cut in 0..bytes.len() {
        let mut part = BytesMut::from(&bytes[..cut]);
        assert_eq!(Decoder::client(version).decode(&mut part), Ok(None));
        assert_eq!(part.len(), cut);
    }
}

/// Decodes `bytes` and checks the packet, without requiring the same bytes back (for
/// inputs with a non-canonical but valid layout).
#[track_caller]
fn decodes_to(version: ProtocolVersion, bytes: &[u8], expected: Packet) {
    let mut buf = BytesMut::from(bytes);
    assert_eq!(
        Decoder::client(version).decode(&mut buf),
        Ok(Some(expected))
    );
    assert!(buf.is_empty());
}

fn connect_abc(v: ProtocolVersion) -> Packet {
    Packet::Connect(Box::new(Connect::new(v, s("abc"))))
}

#[test]
fn connect_minimal_each_version() {
    vector(
        V3_1,
        b"\x10\x11\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x03abc",
        connect_abc(V3_1),
    );
    vector(
        V3_1_1,
        b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc",
        connect_abc(V3_1_1),
    );
    vector(
        V5,
        b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03abc",
        connect_abc(V5),
    );
}

#[test]
fn connect_server_decoder_learns_version() {
    let mut d = Decoder::server();
    assert_eq!(d.version(), None);
    let mut buf = BytesMut::from(&b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc\xc0\x00"[..]);
    assert_eq!(d.decode(&mut buf), Ok(Some(connect_abc(V3_1_1))));
    assert_eq!(d.version(), Some(V3_1_1));
    assert_eq!(d.decode(&mut buf), Ok(Some(Packet::PingReq)));
}

fn connect_full(v: ProtocolVersion) -> Connect {
    Connect {
        protocol_version: v,
        clean_start: true,
        keep_alive: 10,
        client_id: s("c"),
        will: Some(Box::new(Will {
            topic: topic("w"),
            payload: Bytes::from_static(b"m"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::new(),
        })),
        username: Some(s("u")),
        password: Some(Bytes::from_static(b"p")),
        properties: Properties::new(),
    }
}

#[test]
fn connect_with_will_username_password() {
    // Flags 0xEE: user name, password, will retain, will QoS 1, will, clean session.
    for (v, name, level) in [(V3_1, &b"MQIsdp"[..], 3u8), (V3_1_1, b"MQTT", 4)] {
        let mut bytes = vec![0x10, 0];
        bytes.extend_from_slice(&[0, name.len() as u8]);
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(&[level, 0xee, 0, 10]);
        bytes.extend_from_slice(b"\x00\x01c\x00\x01w\x00\x01m\x00\x01u\x00\x01p");
        bytes[1] = (bytes.len() - 2) as u8;
        vector(v, &bytes, Packet::Connect(Box::new(connect_full(v))));
    }
    // 5.0: CONNECT properties, then client id, will properties, will topic, payload,
    // user name, password.
    let mut c = connect_full(V5);
    c.properties.session_expiry_interval = Some(10);
    c.properties.receive_maximum = NonZeroU16::new(20);
    c.properties.maximum_packet_size = NonZeroU32::new(1024);
    c.properties.topic_alias_maximum = Some(5);
    c.properties.request_response_information = Some(true);
    c.properties.request_problem_information = Some(false);
    c.properties.authentication_method = Some(s("SCRAM"));
    c.properties.authentication_data = Some(Bytes::from_static(b"\x01\x02"));
    c.properties.user_properties = vec![(s("k"), s("v")), (s("k"), s("v2"))];
    let w = c.will.as_mut().unwrap();
    w.properties.will_delay_interval = Some(5);
    w.properties.payload_format_indicator = Some(true);
    w.properties.message_expiry_interval = Some(60);
    w.properties.content_type = Some(s("text"));
    w.properties.response_topic = Some(topic("r"));
    w.properties.correlation_data = Some(Bytes::from_static(b"id"));
    w.properties.user_properties = vec![(s("a"), s("b"))];
    let mut bytes = b"\x10\x00\x00\x04MQTT\x05\xee\x00\x0a".to_vec();
    let props: &[u8] = b"\x11\x00\x00\x00\x0a\x21\x00\x14\x27\x00\x00\x04\x00\x22\x00\x05\x19\x01\x17\x00\x15\x00\x05SCRAM\x16\x00\x02\x01\x02\x26\x00\x01k\x00\x01v\x26\x00\x01k\x00\x02v2";
    bytes.push(props.len() as u8);
    bytes.extend_from_slice(props);
    bytes.extend_from_slice(b"\x00\x01c");
    let will_props: &[u8] =
        b"\x18\x00\x00\x00\x05\x01\x01\x02\x00\x00\x00\x3c\x03\x00\x04text\x08\x00\x01r\x09\x00\x02id\x26\x00\x01a\x00\x01b";
    bytes.push(will_props.len() as u8);
    bytes.extend_from_slice(will_props);
    bytes.extend_from_slice(b"\x00\x01w\x00\x01m\x00\x01u\x00\x01p");
    bytes[1] = (bytes.len() - 2) as u8;
    vector(V5, &bytes, Packet::Connect(Box::new(c)));
}

#[test]
fn connack_each_version() {
    let accepted = |present| {
        Packet::ConnAck(Box::new(ConnAck {
            session_present: present,
            ..ConnAck::default()
        }))
    };
    vector(V3_1, b"\x20\x02\x00\x00", accepted(false));
    vector(V3_1_1, b"\x20\x02\x01\x00", accepted(true));
    // 3.1.1 return codes 1..=5 map to their 5.0 reason codes.
    for (code, reason) in [
        (1, ReasonCode::UnsupportedProtocolVersion),
        (2, ReasonCode::ClientIdentifierNotValid),
        (3, ReasonCode::ServerUnavailable),
        (4, ReasonCode::BadUserNameOrPassword),
        (5, ReasonCode::NotAuthorized),
    ] {
        let p = Packet::ConnAck(Box::new(ConnAck {
            reason_code: reason,
            ..ConnAck::default()
        }));
        vector(V3_1_1, &[0x20, 2, 0, code], p);
    }
    vector(V5, b"\x20\x03\x01\x00\x00", accepted(true));
    let mut c = ConnAck {
        reason_code: ReasonCode::Success,
        ..ConnAck::default()
    };
    let p = &mut c.properties;
    p.session_expiry_interval = Some(30);
    p.receive_maximum = NonZeroU16::new(10);
    p.maximum_qos = Some(QoS::AtLeastOnce);
    p.retain_available = Some(false);
    p.maximum_packet_size = NonZeroU32::new(65536);
    p.assigned_client_identifier = Some(s("x"));
    p.topic_alias_maximum = Some(8);
    p.reason_string = Some(s("ok"));
    p.wildcard_subscription_available = Some(true);
    p.subscription_identifiers_available = Some(false);
    p.shared_subscription_available = Some(true);
    p.server_keep_alive = Some(30);
    p.response_information = Some(s("ri"));
    p.server_reference = Some(s("sr"));
    p.authentication_method = Some(s("m"));
    p.authentication_data = Some(Bytes::from_static(b"d"));
    p.user_properties = vec![(s("k"), s("v"))];
    let props: &[u8] = b"\x11\x00\x00\x00\x1e\x21\x00\x0a\x24\x01\x25\x00\x27\x00\x01\x00\x00\x12\x00\x01x\x22\x00\x08\x1f\x00\x02ok\x28\x01\x29\x00\x2a\x01\x13\x00\x1e\x1a\x00\x02ri\x1c\x00\x02sr\x15\x00\x01m\x16\x00\x01d\x26\x00\x01k\x00\x01v";
    let mut bytes = vec![0x20, 0, 0, 0, props.len() as u8];
    bytes.extend_from_slice(props);
    bytes[1] = (bytes.len() - 2) as u8;
    vector(V5, &bytes, Packet::ConnAck(Box::new(c)));
    let refused = Packet::ConnAck(Box::new(ConnAck {
        reason_code: ReasonCode::Banned,
        ..ConnAck::default()
    }));
    vector(V5, b"\x20\x03\x00\x8a\x00", refused);
}

#[test]
fn publish_each_qos_and_version() {
    for v in [V3_1, V3_1_1, V5] {
        let props = if v == V5 { &b"\x00"[..] } else { &b""[..] };
        let rl = 7 + props.len() as u8;
        // QoS 0 with RETAIN: no packet identifier.
        let mut bytes = vec![0x31, rl, 0, 3, b'a', b'/', b'b'];
        bytes.extend_from_slice(props);
        bytes.extend_from_slice(b"hi");
        let mut p = Publish::new(topic("a/b"), "hi");
        p.retain = true;
        vector(v, &bytes, Packet::Publish(p.clone()));
        // QoS 1, packet identifier 10.
        let mut bytes = vec![0x32, rl + 2, 0, 3, b'a', b'/', b'b', 0, 10];
        bytes.extend_from_slice(props);
        bytes.extend_from_slice(b"hi");
        let mut p = Publish::new(topic("a/b"), "hi");
        p.qos = QoS::AtLeastOnce;
        p.packet_id = Some(pid(10));
        vector(v, &bytes, Packet::Publish(p.clone()));
        // QoS 2 with DUP.
        bytes[0] = 0x3c;
        p.qos = QoS::ExactlyOnce;
        p.dup = true;
        vector(v, &bytes, Packet::Publish(p));
    }
    // Empty payload is allowed.
    vector(
        V3_1_1,
        b"\x30\x05\x00\x03a/b",
        Packet::Publish(Publish::new(topic("a/b"), "")),
    );
}

#[test]
fn publish_v5_all_properties() {
    let mut p = Publish::new(topic("a/b"), "hi");
    p.qos = QoS::AtLeastOnce;
    p.packet_id = Some(pid(1));
    let pr = &mut p.properties;
    pr.payload_format_indicator = Some(true);
    pr.message_expiry_interval = Some(60);
    pr.topic_alias = NonZeroU16::new(5);
    pr.response_topic = Some(topic("r"));
    pr.correlation_data = Some(Bytes::from_static(b"\x01\x02"));
    pr.subscription_identifiers = vec![NonZeroU32::new(7).unwrap(), NonZeroU32::new(300).unwrap()];
    pr.content_type = Some(s("text"));
    pr.user_properties = vec![(s("k"), s("v")), (s("k"), s("w"))];
    let props: &[u8] = b"\x01\x01\x02\x00\x00\x00\x3c\x23\x00\x05\x08\x00\x01r\x09\x00\x02\x01\x02\x0b\x07\x0b\xac\x02\x03\x00\x04text\x26\x00\x01k\x00\x01v\x26\x00\x01k\x00\x01w";
    let mut bytes = b"\x32\x00\x00\x03a/b\x00\x01".to_vec();
    bytes.push(props.len() as u8);
    bytes.extend_from_slice(props);
    bytes.extend_from_slice(b"hi");
    bytes[1] = (bytes.len() - 2) as u8;
    vector(V5, &bytes, Packet::Publish(p.clone()));

    // Properties in another order decode to the same packet; user properties keep theirs.
    let reordered: &[u8] = b"\x26\x00\x01k\x00\x01v\x03\x00\x04text\x0b\x07\x01\x01\x23\x00\x05\x02\x00\x00\x00\x3c\x08\x00\x01r\x0b\xac\x02\x09\x00\x02\x01\x02\x26\x00\x01k\x00\x01w";
    let mut bytes = b"\x32\x00\x00\x03a/b\x00\x01".to_vec();
    bytes.push(reordered.len() as u8);
    bytes.extend_from_slice(reordered);
    bytes.extend_from_slice(b"hi");
    bytes[1] = (bytes.len() - 2) as u8;
    decodes_to(V5, &bytes, Packet::Publish(p));
}

#[test]
fn publish_v5_topic_alias_with_empty_topic() {
    let mut p = Publish::new(TopicName::empty(), "h");
    p.properties.topic_alias = NonZeroU16::new(1);
    vector(V5, b"\x30\x07\x00\x00\x03\x23\x00\x01h", Packet::Publish(p));
}

#[test]
fn pub_responses_each_version() {
    type Make = fn(PubResponse) -> Packet;
    let kinds: [(u8, Make); 4] = [
        (0x40, Packet::PubAck),
        (0x50, Packet::PubRec),
        (0x62, Packet::PubRel),
        (0x70, Packet::PubComp),
    ];
    for (first, make) in kinds {
        for v in [V3_1, V3_1_1, V5] {
            vector(v, &[first, 2, 0, 10], make(PubResponse::new(pid(10))));
        }
        // 5.0: a reason code alone, and one with a Reason String.
        let code = if first == 0x62 || first == 0x70 {
            ReasonCode::PacketIdentifierNotFound
        } else {
            ReasonCode::NotAuthorized
        };
        let mut r = PubResponse::new(pid(10));
        r.reason_code = code;
        vector(V5, &[first, 3, 0, 10, code.as_u8()], make(r.clone()));
        r.properties.reason_string = Some(s("no"));
        vector(
            V5,
            &[first, 9, 0, 10, code.as_u8(), 5, 0x1f, 0, 2, b'n', b'o'],
            make(r),
        );
        // A success code and an empty property list may be written out in full.
        decodes_to(
            V5,
            &[first, 4, 0, 10, 0, 0],
            make(PubResponse::new(pid(10))),
        );
    }
    let mut r = PubResponse::new(pid(10));
    r.reason_code = ReasonCode::NoMatchingSubscribers;
    vector(V5, b"\x40\x03\x00\x0a\x10", Packet::PubAck(r));
}

fn sub(f: &str, qos: QoS) -> Subscription {
    Subscription {
        filter: filter(f),
        options: SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        },
    }
}

#[test]
fn subscribe_and_suback_each_version() {
    for v in [V3_1, V3_1_1] {
        vector(
            v,
            b"\x82\x0e\x00\x01\x00\x03a/b\x01\x00\x03c/+\x02",
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                properties: Default::default(),
                subscriptions: vec![sub("a/b", QoS::AtLeastOnce), sub("c/+", QoS::ExactlyOnce)],
            }),
        );
        vector(
            v,
            b"\x90\x05\x00\x01\x01\x02\x80",
            Packet::SubAck(SubAck {
                packet_id: pid(1),
                properties: Default::default(),
                reason_codes: vec![
                    ReasonCode::GrantedQoS1,
                    ReasonCode::GrantedQoS2,
                    ReasonCode::UnspecifiedError,
                ],
            }),
        );
    }
    let mut first = sub("a/b", QoS::AtLeastOnce);
    first.options.no_local = true;
    first.options.retain_as_published = true;
    first.options.retain_handling = RetainHandling::DoNotSend;
    let mut props = SubscribeProperties::default();
    props.subscription_identifier = NonZeroU32::new(5);
    vector(
        V5,
        b"\x82\x11\x00\x01\x02\x0b\x05\x00\x03a/b\x2d\x00\x03c/#\x00",
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: props.into(),
            subscriptions: vec![first, sub("c/#", QoS::AtMostOnce)],
        }),
    );
    vector(
        V5,
        b"\x90\x06\x00\x01\x00\x01\x97\xa2",
        Packet::SubAck(SubAck {
            packet_id: pid(1),
            properties: Default::default(),
            reason_codes: vec![
                ReasonCode::GrantedQoS1,
                ReasonCode::QuotaExceeded,
                ReasonCode::WildcardSubscriptionsNotSupported,
            ],
        }),
    );
}

#[test]
fn unsubscribe_and_unsuback_each_version() {
    for v in [V3_1, V3_1_1] {
        vector(
            v,
            b"\xa2\x07\x00\x02\x00\x03a/b",
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(2),
                properties: Default::default(),
                filters: vec![filter("a/b")],
            }),
        );
        vector(
            v,
            b"\xb0\x02\x00\x02",
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(2),
                properties: Default::default(),
                reason_codes: vec![],
            }),
        );
    }
    let mut props = UnsubscribeProperties::default();
    props.user_properties = vec![(s("k"), s("v"))];
    vector(
        V5,
        b"\xa2\x0f\x00\x02\x07\x26\x00\x01k\x00\x01v\x00\x03a/b",
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(2),
            properties: props.into(),
            filters: vec![filter("a/b")],
        }),
    );
    vector(
        V5,
        b"\xb0\x05\x00\x02\x00\x00\x11",
        Packet::UnsubAck(UnsubAck {
            packet_id: pid(2),
            properties: Default::default(),
            reason_codes: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
        }),
    );
}

#[test]
fn ping_and_disconnect_each_version() {
    for v in [V3_1, V3_1_1, V5] {
        vector(v, b"\xc0\x00", Packet::PingReq);
        vector(v, b"\xd0\x00", Packet::PingResp);
        vector(v, b"\xe0\x00", Packet::Disconnect(Disconnect::default()));
    }
    let d = Disconnect {
        reason_code: ReasonCode::DisconnectWithWillMessage,
        ..Disconnect::default()
    };
    vector(V5, b"\xe0\x01\x04", Packet::Disconnect(d));
    let mut d = Disconnect {
        reason_code: ReasonCode::SessionTakenOver,
        ..Disconnect::default()
    };
    d.properties.session_expiry_interval = Some(0);
    d.properties.reason_string = Some(s("x"));
    d.properties.server_reference = Some(s("y"));
    vector(
        V5,
        b"\xe0\x0f\x8e\x0d\x11\x00\x00\x00\x00\x1f\x00\x01x\x1c\x00\x01y",
        Packet::Disconnect(d),
    );
}

#[test]
fn auth_v5_only() {
    vector(V5, b"\xf0\x00", Packet::Auth(Auth::default()));
    let mut a = Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        ..Auth::default()
    };
    a.properties.authentication_method = Some(s("SCR"));
    a.properties.authentication_data = Some(Bytes::from_static(b"\x01\x02"));
    a.properties.reason_string = Some(s("r"));
    vector(
        V5,
        b"\xf0\x11\x18\x0f\x15\x00\x03SCR\x16\x00\x02\x01\x02\x1f\x00\x01r",
        Packet::Auth(a),
    );
}

#[test]
fn many_packets_in_one_buffer_decode_in_order() {
    let mut buf = BytesMut::from(&b"\xc0\x00\x30\x05\x00\x03a/b\x40\x02\x00\x0a\xe0\x00"[..]);
    let mut d = Decoder::client(V3_1_1);
    assert_eq!(d.decode(&mut buf), Ok(Some(Packet::PingReq)));
    assert_eq!(
        d.decode(&mut buf),
        Ok(Some(Packet::Publish(Publish::new(topic("a/b"), ""))))
    );
    assert_eq!(
        d.decode(&mut buf),
        Ok(Some(Packet::PubAck(PubResponse::new(pid(10)))))
    );
    assert_eq!(
        d.decode(&mut buf),
        Ok(Some(Packet::Disconnect(Disconnect::default())))
    );
    assert_eq!(d.decode(&mut buf), Ok(None));
}

#[test]
fn decoded_publish_shares_the_read_buffer() {
    let mut buf = BytesMut::from(&b"\x30\x0a\x00\x03a/bhello"[..]);
    let base = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = Decoder::client(V3_1_1).decode(&mut buf).unwrap() else {
        panic!("expected PUBLISH");
    };
    // Payload and topic point into the original allocation: no copy was made.
    assert_eq!(p.payload.as_ptr() as usize, base + 7);
    assert_eq!(p.topic.as_ptr() as usize, base + 4);
}
