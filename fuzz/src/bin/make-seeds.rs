//! Writes the seed corpora of the fuzz targets: `decode` into `corpus/decode/`, `session`
//! into `corpus/session/` (see `session_seeds`), `broker` into `corpus/broker/` (see
//! `broker_seeds` at the end). The `config` seeds are TOML files written by hand; they are
//! checked here (`check_config_seeds`).
//!
//! `decode`: one valid frame per packet type per protocol version (AUTH only in 5.0), named
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
        properties: Properties::new(),
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
        }
        .into();
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
        }
        .into();
    }
    c.will = Some(Box::new(will));
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
        }
        .into();
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
        properties: Default::default(),
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
        }
        .into();
    }
    Packet::Subscribe(sub)
}

fn suback(v: ProtocolVersion) -> Packet {
    let mut s_ = SubAck {
        packet_id: id(8),
        properties: Default::default(),
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
        properties: Default::default(),
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
        properties: Default::default(),
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
        }
        .into();
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
        }
        .into(),
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
    check_config_seeds();
    write_decode_seeds();
    write_session_seeds();
    write_broker_seeds();
}

/// The `config` seeds are TOML written by hand (see the fuzz README): each passes every
/// check of the target, and those meant to be accepted are.
fn check_config_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/config");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus/config")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .filter(|n| n.starts_with("seed-"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no config seeds");
    for name in &names {
        let text = std::fs::read_to_string(dir.join(name)).expect("read seed");
        mqtt_proto_fuzz::config::run(&text);
        let accepted = mqtt_adapter_common::config::Config::parse(&text);
        assert_eq!(
            accepted.is_ok(),
            name != "seed-mistakes",
            "{name}: {accepted:?}"
        );
    }
    println!("checked {} config seeds in {}", names.len(), dir.display());
}

fn write_decode_seeds() {
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

// ----- `session` ---------------------------------------------------------------------------

mod session_seeds {
    //! Seeds of the `session` target: operation lists that reach the deep states (open
    //! connections, QoS 1/2 exchanges both ways, SUBSCRIBE / UNSUBSCRIBE, keep-alive, topic
    //! aliases, limits, resumed sessions) in each mode and version, written with
    //! `session::to_bytes`. Each is checked to decode back to the same operations, to pass
    //! every check of the target, and to reach what it is meant to (its `Stats`).

    use mqtt_proto_fuzz::session::{
        self as fz, Command as C, ConnectArgs, IdArg, Input, Op, PacketArg as P, PairOp,
        PublishArgs, Qos, Settings, Stats, Version,
    };

    pub fn settings() -> Settings {
        Settings {
            max_packet_size: 0,
            receive_maximum: 0,
            max_inflight: 0,
            max_queued_messages: 0,
            max_queued_bytes: 0,
            topic_alias_maximum: 0,
            outgoing_topic_aliases: false,
            connect_timeout: 0,
            ping_timeout: 0,
            server_keep_alive: None,
            maximum_qos: Qos::Two,
            retain_available: true,
            manual_acks: false,
        }
    }

    fn connect(version: Version, clean_start: bool, keep_alive: u8) -> ConnectArgs {
        ConnectArgs {
            version,
            clean_start,
            keep_alive,
            client_id: 0,
            session_expiry: None,
            receive_maximum: None,
            maximum_packet_size: None,
            topic_alias_maximum: None,
            request_problem_information: None,
            will: None,
            credentials: false,
        }
    }

    fn msg(qos: Qos, topic: u8, payload: u8) -> PublishArgs {
        PublishArgs {
            qos,
            retain: false,
            topic,
            payload,
        }
    }

    fn connack(session_present: bool) -> P {
        P::ConnAck {
            session_present,
            reason: 0,
            receive_maximum: None,
            maximum_packet_size: None,
            topic_alias_maximum: None,
            maximum_qos: None,
            retain_available: None,
            server_keep_alive: None,
        }
    }

    fn publish_in(qos: Qos, id: IdArg, topic: u8) -> P {
        P::Publish {
            qos,
            dup: false,
            retain: false,
            topic,
            id,
            payload: 2,
            alias: None,
            alias_only: false,
            subscription_id: false,
        }
    }

    fn with_alias(p: P, a: u8, only: bool) -> P {
        match p {
            P::Publish {
                qos,
                dup,
                retain,
                topic,
                id,
                payload,
                subscription_id,
                ..
            } => P::Publish {
                qos,
                dup,
                retain,
                topic,
                id,
                payload,
                alias: Some(a),
                alias_only: only,
                subscription_id,
            },
            p => p,
        }
    }

    fn dup(p: P) -> P {
        match p {
            P::Publish {
                qos,
                retain,
                topic,
                id,
                payload,
                alias,
                alias_only,
                subscription_id,
                ..
            } => P::Publish {
                qos,
                dup: true,
                retain,
                topic,
                id,
                payload,
                alias,
                alias_only,
                subscription_id,
            },
            p => p,
        }
    }

    fn pk(p: P) -> Op {
        Op::Packet(p, 0)
    }

    fn cmd(c: C) -> Op {
        Op::Command(c)
    }

    use IdArg::{Received, Sent, Small};
    use Qos::{One, Two, Zero};
    use Version::{V3_1, V3_1_1, V5};

    /// A seed: its name, the input, and what it must reach.
    pub type Seed = (&'static str, Input, fn(&Stats) -> bool);

    pub fn seeds() -> Vec<Seed> {
        let mut out: Vec<Seed> = Vec::new();

        // A 5.0 server: QoS 2 and QoS 1 in (one chunked, one resent before PUBREL),
        // SUBSCRIBE / UNSUBSCRIBE answered, QoS 1 and 2 out, PINGREQ, DISCONNECT.
        out.push((
            "server-v5-flows",
            Input::Server(
                settings(),
                vec![
                    pk(P::Connect(connect(V5, true, 30))),
                    cmd(C::Accept(false, false)),
                    Op::Packet(publish_in(Two, Small(0), 1), 3),
                    pk(dup(publish_in(Two, Small(0), 1))),
                    pk(P::PubRel(Small(0), 0)),
                    pk(publish_in(One, Small(1), 2)),
                    pk(P::Subscribe(Small(2), 0b111, Two)),
                    cmd(C::SubAck(0, 2)),
                    pk(P::Unsubscribe(Small(3), 0b1)),
                    cmd(C::UnsubAck(0, 0)),
                    cmd(C::Publish(msg(One, 1, 2))),
                    pk(P::PubAck(Sent(0), 0)),
                    cmd(C::Publish(msg(Two, 2, 2))),
                    pk(P::PubRec(Sent(0), 0)),
                    pk(P::PubComp(Sent(0), 0)),
                    pk(P::PingReq),
                    Op::Advance(20),
                    pk(P::Disconnect(0, None)),
                ],
            ),
            |s| {
                s.opened == 1
                    && s.messages == 2
                    && s.delivered == 2
                    && s.pubcomp_sent == 1
                    && s.subacks == 2
                    && s.pings == 1
                    && s.closed == 1
            },
        ));

        // A 3.1.1 server with an inflight window of 2: messages in flight and queued when
        // the transport closes, one more queued offline, resumed by the next connection
        // (PUBLISH DUP, PUBREL) and completed.
        out.push((
            "server-v3.1.1-resume",
            Input::Server(
                Settings {
                    max_inflight: 2,
                    ..settings()
                },
                vec![
                    pk(P::Connect(connect(V3_1_1, false, 0))),
                    cmd(C::Accept(false, false)),
                    cmd(C::PublishEncoded(msg(One, 0, 1), V3_1)),
                    cmd(C::Publish(msg(Two, 1, 1))),
                    cmd(C::Publish(msg(One, 2, 1))),
                    pk(P::PubRec(Small(1), 0)),
                    Op::Closed,
                    Op::Offline(msg(Two, 3, 1)),
                    Op::Reconnect(false),
                    pk(P::Connect(connect(V3_1_1, false, 0))),
                    cmd(C::Accept(true, true)),
                    pk(P::PubAck(Small(0), 0)),
                    pk(P::PubComp(Small(1), 0)),
                    pk(P::PubAck(Small(2), 0)),
                    pk(P::PubRec(Small(3), 0)),
                    pk(P::PubComp(Small(3), 0)),
                ],
            ),
            |s| s.opened == 2 && s.reconnects == 1 && s.resent >= 2 && s.delivered == 4,
        ));

        // A 5.0 server with limits: manual acknowledgements (out of order), a Receive
        // Maximum of 2, topic aliases both ways, a small client Maximum Packet Size (a
        // message too large is dropped), Maximum QoS 1, Server Keep Alive 5 s (the client
        // goes quiet and is disconnected).
        out.push((
            "server-v5-limits",
            Input::Server(
                Settings {
                    max_packet_size: 40,
                    receive_maximum: 2,
                    topic_alias_maximum: 3,
                    outgoing_topic_aliases: true,
                    server_keep_alive: Some(5),
                    maximum_qos: One,
                    manual_acks: true,
                    ..settings()
                },
                vec![
                    pk(P::Connect(ConnectArgs {
                        session_expiry: Some(60),
                        receive_maximum: Some(1),
                        maximum_packet_size: Some(60),
                        topic_alias_maximum: Some(2),
                        will: Some(One),
                        credentials: true,
                        ..connect(V5, false, 30)
                    })),
                    cmd(C::Accept(false, false)),
                    pk(with_alias(publish_in(One, Small(0), 1), 1, false)),
                    pk(with_alias(publish_in(One, Small(1), 1), 1, true)),
                    cmd(C::Ack(Received(0), 0x10)),
                    cmd(C::Ack(Received(1), 0)),
                    pk(with_alias(publish_in(Zero, Small(0), 1), 1, true)),
                    cmd(C::Publish(msg(Zero, 1, 1))),
                    cmd(C::Publish(msg(Zero, 1, 1))),
                    cmd(C::Publish(msg(Zero, 3, 30))),
                    cmd(C::Publish(msg(One, 2, 1))),
                    cmd(C::Publish(msg(One, 2, 1))),
                    pk(P::PubAck(Sent(0), 0)),
                    Op::Advance(8),
                ],
            ),
            |s| s.messages == 3 && s.dropped == 1 && s.delivered == 1 && s.closed == 1,
        ));

        // A 5.0 client with an inflight window of 2: QoS 1 and 2 out (one queued),
        // SUBSCRIBE / UNSUBSCRIBE, QoS 2 in, keep-alive PINGREQ, then a PINGREQ left
        // unanswered until the ping timeout.
        out.push((
            "client-v5-flows",
            Input::Client(
                Settings {
                    max_inflight: 2,
                    ..settings()
                },
                connect(V5, true, 10),
                vec![
                    pk(P::ConnAck {
                        session_present: false,
                        reason: 0,
                        receive_maximum: Some(3),
                        maximum_packet_size: None,
                        topic_alias_maximum: Some(2),
                        maximum_qos: None,
                        retain_available: None,
                        server_keep_alive: None,
                    }),
                    cmd(C::Publish(msg(One, 0, 1))),
                    cmd(C::Publish(msg(Two, 1, 1))),
                    cmd(C::Publish(msg(Two, 2, 1))),
                    pk(P::PubAck(Sent(1), 0)),
                    pk(P::PubRec(Sent(1), 0)),
                    pk(P::PubComp(Sent(0), 0)),
                    pk(P::PubRec(Sent(1), 0)),
                    pk(P::PubComp(Sent(0), 0)),
                    cmd(C::Subscribe(0b11, Two, Some(7))),
                    pk(P::SubAck(Sent(0), 1, 1)),
                    cmd(C::Unsubscribe(0b1)),
                    pk(P::UnsubAck(Sent(0), 0, 0)),
                    pk(publish_in(Two, Small(4), 0)),
                    pk(P::PubRel(Received(0), 0)),
                    Op::Advance(10),
                    pk(P::PingResp),
                    cmd(C::Ping),
                    Op::Advance(11),
                ],
            ),
            |s| {
                s.opened == 1
                    && s.delivered == 3
                    && s.subacks == 2
                    && s.messages == 1
                    && s.pubcomp_sent == 1
                    && s.pings == 2
                    && s.closed == 1
            },
        ));

        // A 3.1.1 client: QoS 1 in flight and QoS 2 released when the transport closes, a
        // message queued offline, resumed with Session Present 1 and completed.
        out.push((
            "client-v3.1.1-resume",
            Input::Client(
                settings(),
                connect(V3_1_1, false, 0),
                vec![
                    pk(connack(false)),
                    cmd(C::Publish(msg(One, 0, 1))),
                    cmd(C::Publish(msg(Two, 1, 1))),
                    pk(P::PubRec(Small(1), 0)),
                    Op::Closed,
                    Op::Offline(msg(Two, 2, 1)),
                    Op::Reconnect(false),
                    pk(connack(true)),
                    pk(P::PubAck(Small(0), 0)),
                    pk(P::PubComp(Small(1), 0)),
                    pk(P::PubRec(Small(2), 0)),
                    pk(P::PubComp(Small(2), 0)),
                ],
            ),
            |s| s.opened == 2 && s.reconnects == 1 && s.resent >= 2 && s.delivered == 3,
        ));

        // A 3.1 client whose server did not keep the session: its messages are dropped.
        out.push((
            "client-v3.1-session-lost",
            Input::Client(
                settings(),
                connect(V3_1, false, 0),
                vec![
                    pk(connack(false)),
                    cmd(C::Publish(msg(One, 0, 1))),
                    cmd(C::Publish(msg(Two, 1, 1))),
                    Op::Closed,
                    Op::Reconnect(false),
                    pk(connack(false)),
                    cmd(C::Disconnect(0, None)),
                ],
            ),
            |s| s.opened == 2 && s.dropped == 2 && s.closed == 2,
        ));

        // A 5.0 pair: SUBSCRIBE, QoS 0/1/2 both ways, partial deliveries, UNSUBSCRIBE,
        // keep-alive, DISCONNECT.
        out.push((
            "pair-v5-flows",
            Input::Pair(
                settings(),
                settings(),
                connect(V5, true, 30),
                vec![
                    PairOp::ToServer(0),
                    PairOp::Server(C::Accept(false, false)),
                    PairOp::ToClient(0),
                    PairOp::Client(C::Subscribe(0b11, Two, None)),
                    PairOp::Flush,
                    PairOp::Server(C::SubAck(0, 2)),
                    PairOp::Flush,
                    PairOp::Server(C::Publish(msg(Two, 1, 4))),
                    PairOp::Server(C::PublishEncoded(msg(One, 1, 4), V5)),
                    PairOp::Client(C::Publish(msg(Two, 2, 4))),
                    PairOp::Client(C::Publish(msg(One, 2, 4))),
                    PairOp::Client(C::Publish(msg(Zero, 2, 4))),
                    PairOp::ToServer(5),
                    PairOp::ToServer(7),
                    PairOp::Flush,
                    PairOp::Flush,
                    PairOp::Client(C::Unsubscribe(1)),
                    PairOp::Flush,
                    PairOp::Server(C::UnsubAck(0, 0)),
                    PairOp::Flush,
                    PairOp::Advance(30),
                    PairOp::Flush,
                    PairOp::Client(C::Disconnect(0, None)),
                    PairOp::Flush,
                ],
            ),
            |s| {
                s.opened == 2
                    && s.messages == 5
                    && s.delivered == 4
                    && s.pubcomp_sent == 2
                    && s.subacks == 4
                    && s.pings == 2
                    && s.closed == 2
            },
        ));

        // A 3.1.1 pair: messages both ways cut off mid-stream, one queued offline by the
        // broker, a new connection resuming both sessions.
        out.push((
            "pair-v3.1.1-resume",
            Input::Pair(
                settings(),
                settings(),
                connect(V3_1_1, false, 0),
                vec![
                    PairOp::ToServer(0),
                    PairOp::Server(C::Accept(false, false)),
                    PairOp::ToClient(0),
                    PairOp::Client(C::Publish(msg(One, 0, 2))),
                    PairOp::Client(C::Publish(msg(Two, 1, 2))),
                    PairOp::Server(C::Publish(msg(Two, 2, 2))),
                    PairOp::Server(C::Publish(msg(One, 3, 2))),
                    PairOp::ToServer(12),
                    PairOp::ToClient(0),
                    PairOp::Offline(false, msg(One, 0, 1)),
                    PairOp::Reconnect(false),
                    PairOp::ToServer(0),
                    PairOp::Server(C::Accept(true, true)),
                    PairOp::Flush,
                    PairOp::Flush,
                ],
            ),
            |s| s.opened == 4 && s.reconnects == 2 && s.resent >= 2 && s.delivered == 5,
        ));

        // A 5.0 pair with limits: the client's Receive Maximum 1 and manual acks, Maximum
        // Packet Size, topic aliases both ways, Maximum QoS 1, Server Keep Alive.
        out.push((
            "pair-v5-limits",
            Input::Pair(
                Settings {
                    max_packet_size: 30,
                    receive_maximum: 1,
                    topic_alias_maximum: 2,
                    outgoing_topic_aliases: true,
                    manual_acks: true,
                    ..settings()
                },
                Settings {
                    receive_maximum: 2,
                    topic_alias_maximum: 3,
                    outgoing_topic_aliases: true,
                    server_keep_alive: Some(4),
                    maximum_qos: One,
                    ..settings()
                },
                ConnectArgs {
                    session_expiry: Some(60),
                    ..connect(V5, false, 30)
                },
                vec![
                    PairOp::ToServer(0),
                    PairOp::Server(C::Accept(false, false)),
                    PairOp::ToClient(0),
                    PairOp::Client(C::Subscribe(0b1, One, None)),
                    PairOp::Flush,
                    PairOp::Server(C::SubAck(0, 1)),
                    PairOp::Flush,
                    PairOp::Server(C::Publish(msg(One, 1, 1))),
                    PairOp::Server(C::Publish(msg(One, 1, 1))),
                    PairOp::Server(C::Publish(msg(One, 1, 60))),
                    PairOp::Flush,
                    PairOp::Client(C::Ack(Received(0), 0)),
                    PairOp::Flush,
                    PairOp::Client(C::Ack(Received(0), 0x10)),
                    PairOp::Flush,
                    PairOp::Client(C::Publish(msg(One, 2, 1))),
                    PairOp::Client(C::Publish(msg(One, 2, 1))),
                    PairOp::Flush,
                    PairOp::Advance(3),
                    PairOp::Flush,
                    PairOp::Advance(3),
                    PairOp::Flush,
                    PairOp::Client(C::Disconnect(4, Some(0))),
                    PairOp::Flush,
                ],
            ),
            |s| {
                s.opened == 2
                    && s.messages == 4
                    && s.dropped == 1
                    && s.delivered == 4
                    && s.pings >= 1
                    && s.closed == 2
            },
        ));

        out
    }

    /// The bytes of a seed, checked.
    pub fn bytes(name: &str, input: &Input, reached: fn(&Stats) -> bool) -> Vec<u8> {
        use arbitrary::{Arbitrary, Unstructured};
        let data = fz::to_bytes(input);
        let decoded = Input::arbitrary_take_rest(Unstructured::new(&data))
            .unwrap_or_else(|e| panic!("session {name}: does not decode: {e}"));
        assert_eq!(&decoded, input, "session {name}: decodes differently");
        let stats = fz::run(input);
        assert!(
            reached(&stats),
            "session {name}: does not reach what it should: {stats:?}"
        );
        data
    }
}

fn write_session_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/session");
    std::fs::create_dir_all(&dir).expect("create corpus/session");
    let seeds = session_seeds::seeds();
    for (name, input, reached) in &seeds {
        let data = session_seeds::bytes(name, input, *reached);
        std::fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
    }
    println!("wrote {} seeds to {}", seeds.len(), dir.display());
}

// ----- `broker` ----------------------------------------------------------------------------

mod broker_seeds {
    //! Seeds of the `broker` target: operation lists over several connections that reach
    //! the deep states (QoS 1/2 both ways, wildcard and shared subscriptions, retained
    //! messages, persistent sessions resumed with their offline queue, takeovers, wills,
    //! authentication and durable acknowledgements), in both modes, written with
    //! `broker::to_bytes`. Each is checked to decode back to the same operations, to pass
    //! every check of the target, and to reach what it is meant to (its `Reached`).

    use mqtt_proto_fuzz::broker::{
        self as fz, AuthAnswer, BrokerOp, ClientLimits, ClientOp as K, ConnectArgs, IdArg, Input,
        Op, OpenArgs, PacketArg as P, PublishArgs, Qos, Reached, Settings, SubArgs, Version,
        WillArgs,
    };

    use IdArg::{Recent, Small};
    use Qos::{One, Two, Zero};
    use Version::{V3_1, V3_1_1, V5};

    pub fn settings() -> Settings {
        Settings {
            max_packet_size: 0,
            receive_maximum: 0,
            max_inflight: 0,
            max_queued_messages: 0,
            max_queued_bytes: 0,
            topic_alias_maximum: 0,
            outgoing_topic_aliases: false,
            connect_timeout: 0,
            server_keep_alive: None,
            session_maximum_qos: Two,
            retain_available: true,
            allow_anonymous: true,
            authenticate: false,
            max_offline_messages: 0,
            max_offline_bytes: 0,
            max_total_offline_bytes: 0,
            queue_qos0_offline: false,
            drop_oldest: false,
            persistent_session_expiry: None,
            max_session_expiry: None,
            max_keep_alive: None,
            max_subscriptions: 0,
            max_topic_levels: 0,
            denied_not_authorized: false,
            sys_interval: None,
            persistence: false,
            maximum_qos: Two,
            acl: 0,
        }
    }

    fn connect(version: Version, client_id: u8, clean_start: bool) -> ConnectArgs {
        ConnectArgs {
            version,
            client_id,
            clean_start,
            keep_alive: 0,
            session_expiry: (!clean_start).then_some(120),
            will: None,
            credentials: None,
            receive_maximum: None,
            maximum_packet_size: None,
            topic_alias_maximum: None,
            auth_method: false,
        }
    }

    fn msg(qos: Qos, topic: u8, retain: bool) -> PublishArgs {
        PublishArgs {
            qos,
            retain,
            topic,
            payload: 2,
            expiry: None,
        }
    }

    fn sub(mask: u16, qos: Qos) -> SubArgs {
        SubArgs {
            mask,
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            id: None,
        }
    }

    fn open() -> OpenArgs {
        OpenArgs {
            tls: false,
            allow_anonymous: None,
        }
    }

    fn publish(qos: Qos, topic: u8, id: IdArg) -> P {
        P::Publish {
            msg: msg(qos, topic, false),
            id,
            dup: false,
            alias: None,
            alias_only: false,
        }
    }

    fn pk(slot: u8, p: P) -> Op {
        Op::Packet(slot, p, 0)
    }

    fn limits() -> ClientLimits {
        ClientLimits {
            receive_maximum: 0,
            max_packet_size: 0,
            topic_alias_maximum: 0,
            outgoing_topic_aliases: false,
        }
    }

    /// A seed: its name, the input, and what it must reach.
    pub type Seed = (&'static str, Input, fn(&Reached) -> bool);

    pub fn seeds() -> Vec<Seed> {
        let mut out: Vec<Seed> = Vec::new();

        // Raw 5.0 and 3.1.1 clients: wildcard and shared subscriptions, QoS 2 in and out
        // (one chunked), a retained message sent on subscribe, the 3.1.1 client's
        // transport lost and its session resumed on a new connection with the message
        // queued meanwhile, PINGREQ, DISCONNECT.
        out.push((
            "raw-flows",
            Input::Raw(
                settings(),
                vec![
                    Op::Open(0, open()),
                    pk(0, P::Connect(connect(V5, 0, true))),
                    Op::Open(1, open()),
                    pk(1, P::Connect(connect(V3_1_1, 1, false))),
                    pk(0, P::Subscribe(Small(0), sub(0b100_0100_0010, Two))),
                    pk(1, P::Subscribe(Small(0), sub(0b1, One))),
                    Op::Packet(1, publish(Two, 1, Small(1)), 3),
                    pk(1, P::PubRel(Small(1), 0)),
                    pk(0, P::PubRec(Recent(0), 0)),
                    pk(0, P::PubComp(Recent(0), 0)),
                    pk(0, P::PubRec(Recent(1), 0)),
                    pk(0, P::PubComp(Recent(1), 0)),
                    pk(1, P::PubAck(Recent(0), 0)),
                    pk(
                        0,
                        P::Publish {
                            msg: msg(One, 1, true),
                            id: Small(2),
                            dup: false,
                            alias: None,
                            alias_only: false,
                        },
                    ),
                    Op::Closed(1),
                    pk(0, publish(One, 1, Small(3))),
                    Op::Open(2, open()),
                    pk(2, P::Connect(connect(V3_1_1, 1, false))),
                    pk(2, P::PubAck(Recent(0), 0)),
                    pk(2, P::Subscribe(Small(4), sub(0b10, Zero))),
                    pk(0, P::PingReq),
                    Op::Advance(5, true),
                    pk(0, P::Disconnect(0, None)),
                ],
            ),
            |r| {
                r.connected == 3
                    && r.resumed == 1
                    && r.qos2_sent >= 2
                    && r.shared_routed >= 1
                    && r.retained_sent >= 1
                    && r.delivered >= 6
            },
        ));

        // Raw clients against authentication, durable acknowledgements, $SYS and a
        // takeover: a 5.0 client with credentials allowed, a 3.1 one denied, a QoS 1
        // message whose PUBACK waits for its record, a will published on takeover.
        out.push((
            "raw-auth-durable-takeover",
            Input::Raw(
                Settings {
                    authenticate: true,
                    persistence: true,
                    sys_interval: Some(5),
                    ..settings()
                },
                vec![
                    Op::Open(0, open()),
                    pk(
                        0,
                        P::Connect(ConnectArgs {
                            credentials: Some(0),
                            will: Some(WillArgs {
                                qos: One,
                                retain: false,
                                topic: 6,
                                delay: None,
                                expiry: None,
                            }),
                            ..connect(V5, 0, false)
                        }),
                    ),
                    Op::Broker(BrokerOp::Auth(0, AuthAnswer::Allow(false))),
                    Op::Open(1, open()),
                    pk(
                        1,
                        P::Connect(ConnectArgs {
                            credentials: Some(1),
                            ..connect(V3_1, 1, true)
                        }),
                    ),
                    Op::Broker(BrokerOp::Auth(0, AuthAnswer::Deny(0x86))),
                    pk(0, P::Subscribe(Small(0), sub(0b1_0100_0000, One))),
                    pk(0, publish(One, 1, Small(1))),
                    Op::Broker(BrokerOp::Durable(0)),
                    pk(0, P::PubAck(Recent(0), 0)),
                    Op::Advance(6, true),
                    Op::Open(2, open()),
                    pk(
                        2,
                        P::Connect(ConnectArgs {
                            credentials: Some(0),
                            ..connect(V5, 0, false)
                        }),
                    ),
                    Op::Broker(BrokerOp::Auth(0, AuthAnswer::Allow(true))),
                    Op::Broker(BrokerOp::Publish(msg(Two, 4, false), 1)),
                    Op::Broker(BrokerOp::Shutdown),
                ],
            ),
            |r| {
                r.connected == 2
                    && r.auth_requests == 3
                    && r.stored >= 1
                    && r.takeovers == 1
                    && r.resumed == 1
                    && r.delivered >= 3
            },
        ));

        // Real clients: a 5.0 and a 3.1.1 member of a shared group and a wildcard
        // subscriber, a publisher sending QoS 0/1/2 delivered in small chunks, a
        // persistent session whose transport breaks, messages queued offline, resumed.
        out.push((
            "clients-shared-offline",
            Input::Clients(
                Settings {
                    queue_qos0_offline: true,
                    ..settings()
                },
                vec![
                    K::Connect(0, connect(V5, 0, false), limits()),
                    K::Connect(1, connect(V3_1_1, 1, false), limits()),
                    K::Connect(2, connect(V5, 2, true), limits()),
                    K::Flush(0),
                    K::Subscribe(0, sub(0b100_0000, Two)),
                    K::Subscribe(1, sub(0b101_0000, One)),
                    K::Subscribe(2, sub(0b1, Two)),
                    K::Flush(5),
                    K::Publish(2, msg(Two, 1, false), 0),
                    K::Publish(2, msg(One, 1, false), 0),
                    K::Publish(2, msg(Zero, 2, false), 0),
                    K::Flush(7),
                    K::Hangup(1),
                    K::Publish(2, msg(One, 2, false), 0),
                    K::Publish(2, msg(Two, 1, true), 0),
                    K::Flush(0),
                    K::Connect(3, connect(V3_1_1, 1, false), limits()),
                    K::Flush(3),
                    K::Disconnect(0, false, None),
                    K::Flush(0),
                ],
            ),
            |r| {
                r.connected == 4
                    && r.resumed == 1
                    && r.shared_routed >= 2
                    && r.client_messages >= 6
                    && r.qos2_sent >= 2
            },
        ));

        // Real clients: a will delayed past the end of a 5.0 session, a takeover of a
        // 3.1.1 client, topic aliases and a small Receive Maximum, keep-alive pings.
        out.push((
            "clients-will-takeover",
            Input::Clients(
                Settings {
                    topic_alias_maximum: 3,
                    outgoing_topic_aliases: true,
                    ..settings()
                },
                vec![
                    K::Connect(
                        0,
                        ConnectArgs {
                            keep_alive: 5,
                            ..connect(V5, 0, true)
                        },
                        ClientLimits {
                            receive_maximum: 1,
                            topic_alias_maximum: 2,
                            outgoing_topic_aliases: true,
                            ..limits()
                        },
                    ),
                    K::Connect(
                        1,
                        ConnectArgs {
                            session_expiry: Some(3),
                            will: Some(WillArgs {
                                qos: Two,
                                retain: true,
                                topic: 6,
                                delay: Some(10),
                                expiry: None,
                            }),
                            ..connect(V5, 1, false)
                        },
                        limits(),
                    ),
                    K::Flush(0),
                    K::Subscribe(0, sub(0b1001_0100, Two)),
                    K::Flush(0),
                    K::Publish(1, msg(One, 1, false), 0),
                    K::Publish(1, msg(Two, 1, false), 0),
                    K::Publish(1, msg(One, 4, false), 0),
                    K::Flush(2),
                    K::Hangup(1),
                    K::Advance(8, true),
                    K::Connect(2, connect(V3_1_1, 2, false), limits()),
                    K::Connect(3, connect(V3_1_1, 2, false), limits()),
                    K::Flush(0),
                    K::Advance(20, true),
                ],
            ),
            |r| {
                r.connected == 4
                    && r.wills == 1
                    && r.takeovers == 1
                    && r.sessions_ended >= 1
                    && r.client_messages >= 4
            },
        ));

        // Real clients with durable acknowledgements: a 3.1.1 publisher's QoS 1 messages
        // routed, their PUBACKs held for the records, its transport broken, its session
        // resumed and the messages resent (at least once), then acknowledged; a 5.0
        // subscriber with a Subscription Identifier, Retain As Published and No Local.
        out.push((
            "clients-publisher-resume",
            Input::Clients(
                Settings {
                    persistence: true,
                    ..settings()
                },
                vec![
                    // A stored subscriber: its copies are what the publisher's
                    // acknowledgements wait for.
                    K::Connect(0, connect(V5, 0, false), limits()),
                    K::Connect(1, connect(V3_1_1, 1, false), limits()),
                    K::Flush(0),
                    K::Subscribe(
                        0,
                        SubArgs {
                            no_local: true,
                            retain_as_published: true,
                            id: Some(7),
                            ..sub(0b1_0010, Two)
                        },
                    ),
                    K::Flush(0),
                    K::Publish(1, msg(One, 1, false), 1),
                    K::Publish(0, msg(One, 2, true), 0),
                    K::Flush(0),
                    K::Broker(BrokerOp::Durable(2)),
                    K::Flush(0),
                    K::Hangup(1),
                    K::Connect(2, connect(V3_1_1, 1, false), limits()),
                    K::Flush(0),
                    K::Broker(BrokerOp::Durable(0)),
                    K::Broker(BrokerOp::Durable(0)),
                    K::Flush(0),
                ],
            ),
            |r| r.connected == 3 && r.resumed == 1 && r.stored >= 1 && r.client_messages >= 4,
        ));

        out
    }

    /// The bytes of a seed, checked.
    pub fn bytes(name: &str, input: &Input, reached: fn(&Reached) -> bool) -> Vec<u8> {
        use arbitrary::{Arbitrary, Unstructured};
        let data = fz::to_bytes(input);
        let decoded = Input::arbitrary_take_rest(Unstructured::new(&data))
            .unwrap_or_else(|e| panic!("broker {name}: does not decode: {e}"));
        assert_eq!(&decoded, input, "broker {name}: decodes differently");
        let r = fz::run(input);
        assert!(
            reached(&r),
            "broker {name}: does not reach what it should: {r:?}"
        );
        data
    }
}

fn write_broker_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/broker");
    std::fs::create_dir_all(&dir).expect("create corpus/broker");
    let seeds = broker_seeds::seeds();
    for (name, input, reached) in &seeds {
        let data = broker_seeds::bytes(name, input, *reached);
        std::fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
    }
    println!("wrote {} seeds to {}", seeds.len(), dir.display());
}
