//! Writes the seed corpus of the `decode` fuzz target into `corpus/decode/`.
//!
//! One valid frame per packet type per protocol version (AUTH only in 5.0), named
//! `seed-<version>-<packet>`, plus a few streams of several packets. Every file starts with
//! the selector byte that picks the decoder the packet is meant for: the server-side
//! decoder for CONNECT (and streams that start with one), a client-side decoder of the
//! version for everything else; no size limit; the second pass feeds one byte at a time.
//!
//! Each seed is checked before it is written: it decodes to exactly the packets it was
//! built from, and passes every check of the fuzz target.
//!
//! Run from `fuzz/`: `cargo run --bin make-seeds` (stable toolchain, no cargo-fuzz needed).

use bytes::{Bytes, BytesMut};
use mqtt_proto::*;
use mqtt_proto_fuzz::{client_for, decode_whole, decoder_for, run, selector, SERVER};
use std::num::{NonZeroU16, NonZeroU32};
use std::path::Path;

fn s(v: &str) -> MqttString {
    MqttString::new(v).unwrap()
}

fn topic(v: &str) -> TopicName {
    TopicName::new(v).unwrap()
}

fn filter(v: &str) -> TopicFilter {
    TopicFilter::new(v).unwrap()
}

fn id(v: u16) -> PacketId {
    NonZeroU16::new(v).unwrap()
}

fn user(k: &str, v: &str) -> (MqttString, MqttString) {
    (s(k), s(v))
}

fn connect(v: ProtocolVersion) -> Packet {
    let v5 = v.is_v5();
    let mut will = Will {
        topic: topic("clients/fuzz-client/status"),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties::default(),
    };
    let mut c = Connect::new(v, s("fuzz-client"));
    c.clean_start = false;
    c.keep_alive = 30;
    c.username = Some(s("user"));
    c.password = Some(Bytes::from_static(b"secret\x00\xff"));
    if v5 {
        will.properties = WillProperties {
            will_delay_interval: Some(10),
            payload_format_indicator: Some(true),
            message_expiry_interval: Some(3600),
            content_type: Some(s("text/plain")),
            response_topic: Some(topic("clients/fuzz-client/reply")),
            correlation_data: Some(Bytes::from_static(b"\x01\x02\x03")),
            user_properties: vec![user("k", "v")],
        };
        c.properties = ConnectProperties {
            session_expiry_interval: Some(300),
            receive_maximum: Some(NonZeroU16::new(20).unwrap()),
            maximum_packet_size: Some(NonZeroU32::new(65_536).unwrap()),
            topic_alias_maximum: Some(10),
            request_response_information: Some(true),
            request_problem_information: Some(false),
            authentication_method: Some(s("SCRAM-SHA-256")),
            authentication_data: Some(Bytes::from_static(b"client-first")),
            user_properties: vec![user("a", "1"), user("a", "2")],
        };
    }
    c.will = Some(will);
    Packet::Connect(Box::new(c))
}

fn connack(v: ProtocolVersion) -> Packet {
    let mut c = ConnAck {
        // 3.1 has no Session Present flag.
        session_present: v != ProtocolVersion::V3_1,
        ..ConnAck::default()
    };
    if v.is_v5() {
        c.properties = ConnAckProperties {
            session_expiry_interval: Some(300),
            receive_maximum: Some(NonZeroU16::new(100).unwrap()),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            maximum_packet_size: Some(NonZeroU32::new(1_048_576).unwrap()),
            assigned_client_identifier: Some(s("assigned-1")),
            topic_alias_maximum: Some(16),
            reason_string: Some(s("welcome")),
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(true),
            shared_subscription_available: Some(false),
            server_keep_alive: Some(45),
            response_information: Some(s("responses/")),
            server_reference: Some(s("other.example:1883")),
            authentication_method: Some(s("SCRAM-SHA-256")),
            authentication_data: Some(Bytes::from_static(b"server-final")),
            user_properties: vec![user("region", "eu")],
        };
    }
    Packet::ConnAck(Box::new(c))
}

fn publish(v: ProtocolVersion) -> Packet {
    let mut p = Publish::new(topic("sensors/room-1/temp"), &b"21.5"[..]);
    p.qos = QoS::AtLeastOnce;
    p.retain = true;
    p.packet_id = Some(id(7));
    if v.is_v5() {
        p.properties = PublishProperties {
            payload_format_indicator: Some(true),
            message_expiry_interval: Some(60),
            topic_alias: Some(NonZeroU16::new(3).unwrap()),
            response_topic: Some(topic("sensors/room-1/ack")),
            correlation_data: Some(Bytes::from_static(b"corr")),
            subscription_identifiers: vec![
                NonZeroU32::new(1).unwrap(),
                NonZeroU32::new(200_000).unwrap(),
            ],
            content_type: Some(s("text/plain")),
            user_properties: vec![user("unit", "C")],
        };
    }
    Packet::Publish(p)
}

/// A QoS 2 re-delivery; in 5.0 with an empty topic that a Topic Alias stands in for.
fn publish_qos2(v: ProtocolVersion) -> Packet {
    let mut p = Publish::new(topic("a/b"), &b"\x00\x01binary\xff"[..]);
    p.qos = QoS::ExactlyOnce;
    p.dup = true;
    p.packet_id = Some(id(0xffff));
    if v.is_v5() {
        p.topic = TopicName::empty();
        p.properties.topic_alias = Some(NonZeroU16::new(3).unwrap());
    }
    Packet::Publish(p)
}

fn pub_response(v: ProtocolVersion, code: ReasonCode, reason: Option<&str>) -> PubResponse {
    let mut r = PubResponse::new(id(7));
    if v.is_v5() {
        r.reason_code = code;
        r.properties.reason_string = reason.map(s);
        r.properties.user_properties = vec![user("trace", "42")];
    }
    r
}

fn subscribe(v: ProtocolVersion) -> Packet {
    let v5 = v.is_v5();
    let options = |qos, no_local, rap, rh| SubscriptionOptions {
        qos,
        no_local: v5 && no_local,
        retain_as_published: v5 && rap,
        retain_handling: if v5 {
            rh
        } else {
            RetainHandling::SendAtSubscribe
        },
    };
    let mut sub = Subscribe {
        packet_id: id(8),
        properties: SubscribeProperties::default(),
        subscriptions: vec![
            Subscription {
                filter: filter("sensors/+/temp"),
                options: options(QoS::AtLeastOnce, true, true, RetainHandling::SendIfNew),
            },
            Subscription {
                filter: filter("$share/group/alerts/#"),
                options: options(QoS::ExactlyOnce, false, false, RetainHandling::DoNotSend),
            },
            Subscription {
                filter: filter("#"),
                options: options(
                    QoS::AtMostOnce,
                    false,
                    false,
                    RetainHandling::SendAtSubscribe,
                ),
            },
        ],
    };
    if v5 {
        sub.properties = SubscribeProperties {
            subscription_identifier: Some(NonZeroU32::new(268_435_455).unwrap()),
            user_properties: vec![user("k", "v")],
        };
    }
    Packet::Subscribe(sub)
}

fn suback(v: ProtocolVersion) -> Packet {
    let mut s_ = SubAck {
        packet_id: id(8),
        properties: AckProperties::default(),
        reason_codes: vec![
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::Success,
            ReasonCode::UnspecifiedError,
        ],
    };
    if v.is_v5() {
        s_.reason_codes
            .push(ReasonCode::SharedSubscriptionsNotSupported);
        s_.properties.reason_string = Some(s("partly granted"));
    }
    Packet::SubAck(s_)
}

fn unsubscribe(v: ProtocolVersion) -> Packet {
    let mut u = Unsubscribe {
        packet_id: id(9),
        properties: UnsubscribeProperties::default(),
        filters: vec![filter("sensors/+/temp"), filter("$share/group/alerts/#")],
    };
    if v.is_v5() {
        u.properties.user_properties = vec![user("k", "v")];
    }
    Packet::Unsubscribe(u)
}

fn unsuback(v: ProtocolVersion) -> Packet {
    let mut u = UnsubAck {
        packet_id: id(9),
        properties: AckProperties::default(),
        reason_codes: Vec::new(),
    };
    if v.is_v5() {
        u.reason_codes = vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted];
        u.properties.reason_string = Some(s("done"));
    }
    Packet::UnsubAck(u)
}

fn disconnect(v: ProtocolVersion) -> Packet {
    let mut d = Disconnect::default();
    if v.is_v5() {
        d.reason_code = ReasonCode::DisconnectWithWillMessage;
        d.properties = DisconnectProperties {
            session_expiry_interval: Some(0),
            reason_string: Some(s("bye")),
            server_reference: None,
            user_properties: vec![user("k", "v")],
        };
    }
    Packet::Disconnect(d)
}

fn auth() -> Packet {
    Packet::Auth(Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        properties: AuthProperties {
            authentication_method: Some(s("SCRAM-SHA-256")),
            authentication_data: Some(Bytes::from_static(b"client-final")),
            reason_string: Some(s("step 2")),
            user_properties: vec![user("k", "v")],
        },
    })
}

/// The seeds of one version: name, selector bits of the decoder, packets.
fn seeds(v: ProtocolVersion) -> Vec<(&'static str, u8, Vec<Packet>)> {
    let client = client_for(v);
    let mut out = vec![
        ("connect", SERVER, vec![connect(v)]),
        ("connack", client, vec![connack(v)]),
        ("publish", client, vec![publish(v)]),
        ("publish-qos2", client, vec![publish_qos2(v)]),
        (
            "puback",
            client,
            vec![Packet::PubAck(pub_response(
                v,
                ReasonCode::NoMatchingSubscribers,
                Some("nobody"),
            ))],
        ),
        (
            "pubrec",
            client,
            vec![Packet::PubRec(pub_response(v, ReasonCode::Success, None))],
        ),
        (
            "pubrel",
            client,
            vec![Packet::PubRel(pub_response(
                v,
                ReasonCode::PacketIdentifierNotFound,
                Some("unknown id"),
            ))],
        ),
        (
            "pubcomp",
            client,
            vec![Packet::PubComp(PubResponse::new(id(7)))],
        ),
        ("subscribe", client, vec![subscribe(v)]),
        ("suback", client, vec![suback(v)]),
        ("unsubscribe", client, vec![unsubscribe(v)]),
        ("unsuback", client, vec![unsuback(v)]),
        ("pingreq", client, vec![Packet::PingReq]),
        ("pingresp", client, vec![Packet::PingResp]),
        ("disconnect", client, vec![disconnect(v)]),
    ];
    if v.is_v5() {
        out.push(("auth", client, vec![auth()]));
    }
    // Streams: a server reading a client's session, a client reading the server's.
    out.push((
        "stream-server",
        SERVER,
        vec![
            connect(v),
            subscribe(v),
            publish(v),
            Packet::PubRel(PubResponse::new(id(7))),
            unsubscribe(v),
            Packet::PingReq,
            disconnect(v),
        ],
    ));
    out.push((
        "stream-client",
        client,
        vec![
            connack(v),
            suback(v),
            publish_qos2(v),
            Packet::PubAck(PubResponse::new(id(7))),
            unsuback(v),
            Packet::PingResp,
        ],
    ));
    out
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/decode");
    std::fs::create_dir_all(&dir).expect("create corpus/decode");
    let versions = [
        (ProtocolVersion::V3_1, "v3.1"),
        (ProtocolVersion::V3_1_1, "v3.1.1"),
        (ProtocolVersion::V5, "v5.0"),
    ];
    let mut count = 0;
    for (v, vname) in versions {
        for (name, decoder, packets) in seeds(v) {
            let sel = selector(decoder, 0, 1);
            let mut data = BytesMut::from(&[sel][..]);
            for p in &packets {
                p.encode(&mut data, v, MAX_PACKET_SIZE)
                    .unwrap_or_else(|e| panic!("{vname} {name}: {e}"));
            }
            let outcome = decode_whole(decoder_for(sel), &data[1..]);
            assert_eq!(
                outcome.end,
                Ok(0),
                "{vname} {name}: does not decode cleanly"
            );
            assert_eq!(
                outcome.packets, packets,
                "{vname} {name}: decodes differently"
            );
            run(&data);
            let file = dir.join(format!("seed-{vname}-{name}"));
            std::fs::write(&file, &data).expect("write seed");
            count += 1;
        }
    }
    println!("wrote {count} seeds to {}", dir.display());
}
