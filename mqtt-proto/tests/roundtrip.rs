//! Property tests: arbitrary valid packets of each version round-trip through the encoder
//! and decoder; any valid stream cut into arbitrary chunks decodes to the same packets;
//! arbitrary bytes never panic and never lose or invent bytes.

#![allow(clippy::field_reassign_with_default)]

use bytes::{Bytes, BytesMut};
use mqtt_proto::*;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use std::num::{NonZeroU16, NonZeroU32};
use ProtocolVersion::{V3_1, V3_1_1, V5};

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V3_1), Just(V3_1_1), Just(V5)]
}

fn string() -> impl Strategy<Value = MqttString> {
    "[^\u{0}]{0,12}".prop_map(|s| MqttString::new(&s).unwrap())
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn topic() -> impl Strategy<Value = TopicName> {
    "[^\u{0}+#]{1,16}".prop_map(|s| TopicName::new(&s).unwrap())
}

fn filter(shared: bool) -> impl Strategy<Value = TopicFilter> {
    let level = prop_oneof![Just("+".to_string()), "[^\u{0}+#/]{0,4}"];
    (
        vec(level, 1..4),
        any::<bool>(),
        if shared {
            of("[a-z]{1,4}").boxed()
        } else {
            Just(None).boxed()
        },
    )
        .prop_map(|(levels, hash, group)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str("/#");
            }
            if f.is_empty() {
                f.push('x');
            }
            if let Some(g) = group {
                f = format!("$share/{g}/{f}");
            }
            TopicFilter::new(&f).unwrap()
        })
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn pid() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|v| PacketId::new(v).unwrap())
}

fn nz16() -> impl Strategy<Value = NonZeroU16> {
    (1..=u16::MAX).prop_map(|v| NonZeroU16::new(v).unwrap())
}

fn nz32() -> impl Strategy<Value = NonZeroU32> {
    (1..=u32::MAX).prop_map(|v| NonZeroU32::new(v).unwrap())
}

fn sub_id() -> impl Strategy<Value = NonZeroU32> {
    (1..=MAX_VAR_INT).prop_map(|v| NonZeroU32::new(v).unwrap())
}

fn user() -> impl Strategy<Value = Vec<(MqttString, MqttString)>> {
    vec((string(), string()), 0..3)
}

/// The reason codes 5.0 allows on `packet`.
fn code(packet: PacketType) -> impl Strategy<Value = ReasonCode> {
    let codes: Vec<ReasonCode> = (0..=255u8)
        .filter_map(ReasonCode::from_u8)
        .filter(|c| c.is_valid_for(packet))
        .collect();
    proptest::sample::select(codes)
}

fn ack_props(v5: bool) -> BoxedStrategy<AckProperties> {
    if !v5 {
        return Just(AckProperties::default()).boxed();
    }
    (of(string()), user())
        .prop_map(|(reason_string, user_properties)| {
            let mut p = AckProperties::default();
            p.reason_string = reason_string;
            p.user_properties = user_properties;
            p
        })
        .boxed()
}

fn connect(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v == V5;
    let props = (
        (of(any::<u32>()), of(nz16()), of(nz32()), of(any::<u16>())),
        (
            of(any::<bool>()),
            of(any::<bool>()),
            of((string(), of(binary()))),
        ),
        user(),
    )
        .prop_map(|((se, rm, mps, tam), (rri, rpi, auth), user)| {
            let mut p = ConnectProperties::default();
            p.session_expiry_interval = se;
            p.receive_maximum = rm;
            p.maximum_packet_size = mps;
            p.topic_alias_maximum = tam;
            p.request_response_information = rri;
            p.request_problem_information = rpi;
            if let Some((m, d)) = auth {
                p.authentication_method = Some(m);
                p.authentication_data = d;
            }
            p.user_properties = user;
            p
        });
    let will_props = (
        (of(any::<u32>()), of(any::<bool>()), of(any::<u32>())),
        (of(string()), of(topic()), of(binary())),
        user(),
    )
        .prop_map(|((d, pf, me), (ct, rt, cd), user)| {
            let mut p = WillProperties::default();
            p.will_delay_interval = d;
            p.payload_format_indicator = pf;
            p.message_expiry_interval = me;
            p.content_type = ct;
            p.response_topic = rt;
            p.correlation_data = cd;
            p.user_properties = user;
            p
        });
    let will = of(
        (topic(), binary(), qos(), any::<bool>(), will_props).prop_map(
            move |(topic, payload, qos, retain, properties)| {
                Box::new(Will {
                    topic,
                    payload,
                    qos,
                    retain,
                    properties: if v5 {
                        properties.into()
                    } else {
                        Default::default()
                    },
                })
            },
        ),
    );
    let client_id = match v {
        V3_1 => "[a-zA-Z0-9]{1,23}".boxed(),
        _ => "[^\u{0}]{0,30}".boxed(),
    };
    (
        (any::<bool>(), any::<u16>(), client_id),
        will,
        (of(string()), of(binary())),
        props,
    )
        .prop_map(
            move |((clean, keep_alive, id), will, (username, password), props)| {
                let clean_start = clean || (v == V3_1_1 && id.is_empty());
                // 3.x: a password needs a user name.
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol_version: v,
                    clean_start,
                    keep_alive,
                    client_id: MqttString::new(&id).unwrap(),
                    will,
                    username,
                    password,
                    properties: if v5 { props.into() } else { Default::default() },
                }))
            },
        )
        .boxed()
}

fn connack(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v == V5;
    let reason = if v5 {
        code(PacketType::ConnAck).boxed()
    } else {
        (0u8..=5)
            .prop_map(|c| ReasonCode::from_v3_connack_code(c).unwrap())
            .boxed()
    };
    let props = (
        (
            of(any::<u32>()),
            of(nz16()),
            of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        ),
        (
            of(any::<bool>()),
            of(nz32()),
            of(string()),
            of(any::<u16>()),
        ),
        (
            of(string()),
            of(any::<bool>()),
            of(any::<bool>()),
            of(any::<bool>()),
        ),
        (
            of(any::<u16>()),
            of(string()),
            of(string()),
            of((string(), of(binary()))),
        ),
        user(),
    )
        .prop_map(
            |(
                (se, rm, mq),
                (ra, mps, aci, tam),
                (rs, wsa, sia, ssa),
                (ska, ri, sr, auth),
                user,
            )| {
                let mut p = ConnAckProperties::default();
                p.session_expiry_interval = se;
                p.receive_maximum = rm;
                p.maximum_qos = mq;
                p.retain_available = ra;
                p.maximum_packet_size = mps;
                p.assigned_client_identifier = aci;
                p.topic_alias_maximum = tam;
                p.reason_string = rs;
                p.wildcard_subscription_available = wsa;
                p.subscription_identifiers_available = sia;
                p.shared_subscription_available = ssa;
                p.server_keep_alive = ska;
                p.response_information = ri;
                p.server_reference = sr;
                if let Some((m, d)) = auth {
                    p.authentication_method = Some(m);
                    p.authentication_data = d;
                }
                p.user_properties = user;
                p
            },
        );
    (any::<bool>(), reason, props)
        .prop_map(move |(present, reason_code, props)| {
            Packet::ConnAck(Box::new(ConnAck {
                // 3.1 has no Session Present flag.
                session_present: present && reason_code == ReasonCode::Success && v != V3_1,
                reason_code,
                properties: if v5 { props } else { Default::default() },
            }))
        })
        .boxed()
}

fn publish(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v == V5;
    let props = (
        (of(any::<bool>()), of(any::<u32>()), of(nz16()), of(topic())),
        (of(binary()), vec(sub_id(), 0..3), of(string())),
        user(),
    )
        .prop_map(|((pf, me, ta, rt), (cd, si, ct), user)| {
            let mut p = PublishProperties::default();
            p.payload_format_indicator = pf;
            p.message_expiry_interval = me;
            p.topic_alias = ta;
            p.response_topic = rt;
            p.correlation_data = cd;
            p.subscription_identifiers = si;
            p.content_type = ct;
            p.user_properties = user;
            p
        });
    (
        (qos(), any::<bool>(), any::<bool>(), pid()),
        topic(),
        any::<bool>(),
        props,
        vec(any::<u8>(), 0..64),
    )
        .prop_map(
            move |((qos, dup, retain, id), topic, empty_topic, props, payload)| {
                let properties = if v5 { props } else { Default::default() };
                let topic = if empty_topic && properties.topic_alias.is_some() {
                    TopicName::empty()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    dup: dup && qos != QoS::AtMostOnce,
                    qos,
                    retain,
                    topic,
                    packet_id: (qos != QoS::AtMostOnce).then_some(id),
                    properties: properties.into(),
                    payload: payload.into(),
                })
            },
        )
        .boxed()
}

fn pub_response(v: ProtocolVersion, t: PacketType) -> BoxedStrategy<Packet> {
    let v5 = v == V5;
    (pid(), code(t), ack_props(v5))
        .prop_map(move |(packet_id, reason_code, properties)| {
            let r = PubResponse {
                packet_id,
                reason_code: if v5 { reason_code } else { ReasonCode::Success },
                properties: properties.into(),
            };
            match t {
                PacketType::PubAck => Packet::PubAck(r),
                PacketType::PubRec => Packet::PubRec(r),
                PacketType::PubRel => Packet::PubRel(r),
                _ => Packet::PubComp(r),
            }
        })
        .boxed()
}

fn subscribe(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v == V5;
    let sub = (filter(v5), qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(
        move |(filter, qos, no_local, rap, rh)| {
            let mut options = SubscriptionOptions {
                qos,
                ..Default::default()
            };
            if v5 {
                options.no_local = no_local && filter.shared().is_none();
                options.retain_as_published = rap;
                options.retain_handling = RetainHandling::from_u8(rh).unwrap();
            }
            Subscription { filter, options }
        },
    );
    (pid(), vec(sub, 1..5), of(sub_id()), user())
        .prop_map(move |(packet_id, subscriptions, id, user)| {
            let mut properties = SubscribeProperties::default();
            if v5 {
                properties.subscription_identifier = id;
                properties.user_properties = user;
            }
            Packet::Subscribe(Subscribe {
                packet_id,
                properties: properties.into(),
                subscriptions,
            })
        })
        .boxed()
}

fn suback(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v == V5;
    let c = if v5 {
        code(PacketType::SubAck).boxed()
    } else {
        proptest::sample::select(vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ])
        .boxed()
    };
    (pid(), ack_props(v5), vec(c, 1..6))
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties: properties.into(),
                reason_codes,
            })
        })
        .boxed()
}

fn unsubscribe(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v == V5;
    (pid(), vec(filter(v5), 1..5), user())
        .prop_map(move |(packet_id, filters, user)| {
            let mut properties = UnsubscribeProperties::default();
            if v5 {
                properties.user_properties = user;
            }
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties: properties.into(),
                filters,
            })
        })
        .boxed()
}

fn unsuback(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v == V5;
    (pid(), ack_props(v5), vec(code(PacketType::UnsubAck), 1..5))
        .prop_map(move |(packet_id, properties, codes)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties: properties.into(),
                reason_codes: if v5 { codes } else { vec![] },
            })
        })
        .boxed()
}

fn disconnect(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    if v != V5 {
        return Just(Packet::Disconnect(Disconnect::default())).boxed();
    }
    (
        code(PacketType::Disconnect),
        of(any::<u32>()),
        of(string()),
        of(string()),
        user(),
    )
        .prop_map(|(reason_code, se, rs, sr, user)| {
            let mut d = Disconnect {
                reason_code,
                ..Default::default()
            };
            d.properties.session_expiry_interval = se;
            d.properties.reason_string = rs;
            d.properties.server_reference = sr;
            d.properties.user_properties = user;
            Packet::Disconnect(d)
        })
        .boxed()
}

fn auth() -> BoxedStrategy<Packet> {
    (
        code(PacketType::Auth),
        of((string(), of(binary()))),
        of(string()),
        user(),
    )
        .prop_map(|(reason_code, method, rs, user)| {
            let mut a = Auth {
                reason_code,
                ..Default::default()
            };
            if let Some((m, d)) = method {
                a.properties.authentication_method = Some(m);
                a.properties.authentication_data = d;
            }
            a.properties.reason_string = rs;
            a.properties.user_properties = user;
            Packet::Auth(a)
        })
        .boxed()
}

/// Any valid packet of version `v`.
fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut all = vec![
        connect(v),
        connack(v),
        publish(v),
        pub_response(v, PacketType::PubAck),
        pub_response(v, PacketType::PubRec),
        pub_response(v, PacketType::PubRel),
        pub_response(v, PacketType::PubComp),
        subscribe(v),
        suback(v),
        unsubscribe(v),
        unsuback(v),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(v),
    ];
    if v == V5 {
        all.push(auth());
    }
    proptest::strategy::Union::new(all).boxed()
}

fn versioned_packets(max: usize) -> impl Strategy<Value = (ProtocolVersion, Vec<Packet>)> {
    version().prop_flat_map(move |v| (Just(v), vec(packet(v), 1..max)))
}

fn encode(v: ProtocolVersion, p: &Packet) -> BytesMut {
    let mut b = BytesMut::new();
    let n = p.encode(&mut b, v, MAX_PACKET_SIZE).unwrap();
    assert_eq!(n, b.len());
    assert_eq!(n, p.encoded_len(v));
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_packets_round_trip((v, packets) in versioned_packets(2)) {
        let p = &packets[0];
        let mut wire = encode(v, p);
        let total = wire.len();
        let decoded = Decoder::client(v).decode(&mut wire).unwrap();
        prop_assert_eq!(decoded.as_ref(), Some(p));
        prop_assert!(wire.is_empty(), "{} bytes left of {}", wire.len(), total);
    }

    #[test]
    fn any_chunking_decodes_the_same(
        (v, packets) in versioned_packets(8),
        cuts in vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut stream = BytesMut::new();
        for p in &packets {
            stream.extend_from_slice(&encode(v, p));
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut decoder = Decoder::client(v);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut from = 0;
        for cut in cuts {
            buf.extend_from_slice(&stream[from..cut]);
            from = cut;
            while let Some(p) = decoder.decode(&mut buf).unwrap() {
                out.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, packets);
    }

    #[test]
    fn acknowledgements_decode_borrowed_as_decode_reads_them(
        v in prop_oneof![Just(V3_1), Just(V3_1_1), Just(V5)],
        id in 1u16..,
        kind in 0u8..6,
        tail in vec(any::<u8>(), 0..8),
    ) {
        let ack = PubResponse::new(PacketId::new(id).unwrap());
        let p = match kind {
            0 => Packet::PubAck(ack),
            1 => Packet::PubRec(ack),
            2 => Packet::PubRel(ack),
            3 => Packet::PubComp(ack),
            4 => Packet::PingReq,
            _ => Packet::PingResp,
        };
        let mut bytes = encode(v, &p).to_vec();
        let len = bytes.len();
        bytes.extend_from_slice(&tail);
        let decoder = Decoder::client(v);
        prop_assert_eq!(decoder.decode_borrowed(&bytes), Some((p, len)));
        // Cut short, it is left to `decode`; so is everything before the version.
        prop_assert_eq!(decoder.decode_borrowed(&bytes[..len - 1]), None);
        prop_assert_eq!(Decoder::server().decode_borrowed(&bytes), None);
        let which = match v {
            V3_1 => 1,
            V3_1_1 => 2,
            _ => 3,
        };
        decode_all_checked(&bytes, which, MAX_PACKET_SIZE)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..256),
        which in 0u8..4,
        max in prop_oneof![Just(MAX_PACKET_SIZE), 2u32..300],
    ) {
        decode_all_checked(&bytes, which, max)?;
    }

    #[test]
    fn mutated_valid_packets_never_panic(
        (v, packets) in versioned_packets(3),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        which in 0u8..4,
    ) {
        let mut bytes = Vec::new();
        for p in &packets {
            bytes.extend_from_slice(&encode(v, p));
        }
        for (i, b) in edits {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        decode_all_checked(&bytes, which, MAX_PACKET_SIZE)?;
    }
}

/// Decodes `bytes` until it stops: nothing consumed on `Ok(None)` or an error, and every
/// packet decoded re-encodes and decodes to itself.
fn decode_all_checked(bytes: &[u8], which: u8, max: u32) -> Result<(), TestCaseError> {
    let mut decoder = match which {
        0 => Decoder::server(),
        1 => Decoder::client(V3_1),
        2 => Decoder::client(V3_1_1),
        _ => Decoder::client(V5),
    }
    .with_max_packet_size(max);
    let mut buf = BytesMut::from(bytes);
    loop {
        let before = buf.len();
        let version = decoder.version();
        let borrowed = decoder.decode_borrowed(&buf);
        match decoder.decode(&mut buf) {
            Ok(Some(p)) => {
                let used = before - buf.len();
                // The borrowed reading, when it finds a packet, finds this one.
                if let Some((b, n)) = borrowed {
                    prop_assert_eq!(&b, &p);
                    prop_assert_eq!(n, used);
                }
                prop_assert!(used >= 2 && used <= max as usize);
                // What decodes re-encodes to the same number of bytes or fewer (a 5.0
                // acknowledgement may spell out an empty property list), and decodes back.
                let v = match &p {
                    Packet::Connect(c) => c.protocol_version,
                    _ => version.expect("only CONNECT decodes before the version is known"),
                };
                let mut again = encode(v, &p);
                prop_assert!(again.len() <= used);
                prop_assert_eq!(Decoder::client(v).decode(&mut again).unwrap(), Some(p));
            }
            Ok(None) | Err(_) => {
                prop_assert!(borrowed.is_none());
                prop_assert_eq!(buf.len(), before);
                prop_assert_eq!(&buf[..], &bytes[bytes.len() - before..]);
                return Ok(());
            }
        }
    }
}
