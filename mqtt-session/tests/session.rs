//! Behaviour of the connection state machine, client and server together over an
//! in-memory link with simulated time. Spec statements are tagged with their version where
//! the numbering differs.

mod common;

use common::*;
use mqtt_proto::*;
use mqtt_session::*;
use std::time::Duration;
use ProtocolVersion::{V3_1, V3_1_1, V5};

const ALL: [ProtocolVersion; 3] = [V3_1, V3_1_1, V5];

#[test]
fn connect_handshake_each_version() {
    for v in ALL {
        let p = Pair::new(v);
        assert!(p.client.is_open() && p.server.is_open(), "{v}");
        assert!(matches!(p.server_events[0], Event::ConnectReceived(_)));
        assert!(matches!(p.client_events[0], Event::Connected(_)));
        assert_eq!(p.client.version(), Some(v));
        assert_eq!(p.server.version(), Some(v));
    }
}

#[test]
fn first_packet_must_be_connect() {
    // [MQTT-3.1.0-1]
    let mut p = Pair::new(V5);
    let mut server = Connection::server(Config::default(), p.now);
    server.handle_input(p.now, b"\xc0\x00");
    let e = server.poll_event();
    assert_eq!(
        e,
        Some(Event::Closed(CloseReason::Violation(Violation::Decode(
            DecodeError::VersionUnknown(PacketType::PingReq)
        ))))
    );
    // [MQTT-3.14.0-1]: no DISCONNECT before CONNACK.
    assert_eq!(server.poll_transmit(), None);
    p.clear();
}

/// AUTH with the Authentication Method `method` if any.
fn auth_packet(reason_code: ReasonCode, method: Option<&str>) -> Auth {
    let properties = AuthProperties {
        authentication_method: method.map(s),
        ..Default::default()
    };
    Auth {
        reason_code,
        properties: properties.into(),
    }
}

/// The same, encoded.
fn auth(reason_code: ReasonCode, method: Option<&str>) -> bytes::Bytes {
    encode(V5, Packet::Auth(auth_packet(reason_code, method)))
}

/// The event after an AUTH was received: the AUTH if `allowed`, else the close for it.
fn assert_auth_taken(e: Option<Event>, allowed: bool, case: &str) {
    if allowed {
        assert!(matches!(e, Some(Event::Auth(_))), "{case}: {e:?}");
    } else {
        assert_eq!(
            e,
            Some(Event::Closed(CloseReason::Violation(
                Violation::UnexpectedAuth
            ))),
            "{case}"
        );
    }
}

#[test]
fn auth_only_in_an_exchange_the_connect_began() {
    use ReasonCode::{ContinueAuthentication, ReAuthenticate, Success};
    // A CONNECT without an Authentication Method: no AUTH may follow (5.0
    // [MQTT-4.12.0-7]), with or without a method of its own, before or after CONNACK.
    for (open, reason_code, method) in [
        (true, ContinueAuthentication, Some("PLAIN")),
        (true, ReAuthenticate, Some("PLAIN")),
        (true, ContinueAuthentication, None),
        (false, ContinueAuthentication, Some("PLAIN")),
    ] {
        let mut p = Pair::new(V5);
        let mut server = Connection::server(Config::default(), p.now);
        let connect = encode(V5, Packet::Connect(Box::new(p.connect_packet(true))));
        server.handle_input(p.now, &connect);
        if open {
            server.accept(p.now, ConnAck::default(), None).unwrap();
        }
        while server.poll_event().is_some() {}
        while server.poll_transmit().is_some() {}
        server.handle_input(p.now, &auth(reason_code, method));
        let case = format!("{open} {reason_code:?} {method:?}");
        assert_eq!(
            server.poll_event(),
            Some(Event::Closed(CloseReason::Violation(
                Violation::UnexpectedAuth
            ))),
            "{case}"
        );
        if open {
            // After CONNACK, a DISCONNECT with Protocol Error says why (section 4.13.1).
            let sent = packets(V5, &[server.poll_transmit().expect(&case)]);
            assert!(
                matches!(&sent[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError),
                "{case}: {sent:?}"
            );
        }
        p.clear();
    }
    // A CONNECT with one: AUTH continues the exchange, always with a method (section
    // 3.15.2.2.2); a client sends 0x18, and 0x19 only once connected ([MQTT-4.12.1-1]).
    for (reason_code, method, allowed) in [
        (ContinueAuthentication, Some("PLAIN"), true),
        (ContinueAuthentication, None, false),
        (ReAuthenticate, Some("PLAIN"), false),
        (Success, Some("PLAIN"), false),
    ] {
        let p = Pair::new(V5);
        let mut server = Connection::server(Config::default(), p.now);
        let mut c = p.connect_packet(true);
        c.properties.authentication_method = Some(s("PLAIN"));
        server.handle_input(p.now, &encode(V5, Packet::Connect(Box::new(c))));
        assert!(matches!(
            server.poll_event(),
            Some(Event::ConnectReceived(_))
        ));
        server.handle_input(p.now, &auth(reason_code, method));
        let case = format!("{reason_code:?} {method:?}");
        assert_auth_taken(server.poll_event(), allowed, &case);
    }
}

/// A 5.0 server connection that accepted the pair's CONNECT, with nothing left to take.
fn open_server(p: &Pair, config: Config) -> Connection {
    let mut server = Connection::server(config, p.now);
    let connect = encode(V5, Packet::Connect(Box::new(p.connect_packet(true))));
    server.handle_input(p.now, &connect);
    assert!(matches!(
        server.poll_event(),
        Some(Event::ConnectReceived(_))
    ));
    server.accept(p.now, ConnAck::default(), None).unwrap();
    while server.poll_transmit().is_some() {}
    server
}

fn sent(server: &mut Connection) -> Vec<Packet> {
    let mut out = vec![];
    while let Some(b) = server.poll_transmit() {
        out.push(b);
    }
    packets(V5, &out)
}

#[test]
fn auth_is_sent_only_in_an_exchange_the_connect_began() {
    use ReasonCode::{ContinueAuthentication, ReAuthenticate, Success};
    // No Authentication Method in CONNECT: neither side may send AUTH (5.0
    // [MQTT-4.12.0-6], [MQTT-4.12.0-7]).
    let mut p = Pair::new(V5);
    for c in [&mut p.client, &mut p.server] {
        assert_eq!(
            c.auth(p.now, auth_packet(ContinueAuthentication, Some("PLAIN"))),
            Err(UsageError::WrongState)
        );
        assert_eq!(c.poll_transmit(), None);
    }
    // With one: AUTH names it, and carries a reason code its sender may use now.
    let mut client = Connection::client(Config::default());
    let mut c = p.connect_packet(true);
    c.properties.authentication_method = Some(s("PLAIN"));
    client.connect(p.now, c).unwrap();
    while client.poll_transmit().is_some() {}
    assert_eq!(
        client.auth(p.now, auth_packet(ContinueAuthentication, None)),
        Err(UsageError::WrongState)
    );
    for code in [ReAuthenticate, Success] {
        assert_eq!(
            client.auth(p.now, auth_packet(code, Some("PLAIN"))),
            Err(UsageError::InvalidReasonCode(code))
        );
    }
    assert_eq!(client.poll_transmit(), None);
    client
        .auth(p.now, auth_packet(ContinueAuthentication, Some("PLAIN")))
        .unwrap();
    assert!(matches!(
        &packets(V5, &[client.poll_transmit().unwrap()])[..],
        [Packet::Auth(a)] if a.reason_code == ContinueAuthentication
    ));
}

#[test]
fn a_client_takes_auth_only_in_an_exchange_its_connect_began() {
    use ReasonCode::{ContinueAuthentication, Success};
    // 5.0 [MQTT-4.12.0-6]: no AUTH from a server after a CONNECT without a method; with
    // one, AUTH names it and, before CONNACK, only continues (0x18).
    for (method, reason_code, method_in_auth, allowed) in [
        (None, ContinueAuthentication, Some("PLAIN"), false),
        (Some("PLAIN"), ContinueAuthentication, None, false),
        (Some("PLAIN"), Success, Some("PLAIN"), false),
        (Some("PLAIN"), ContinueAuthentication, Some("PLAIN"), true),
    ] {
        let p = Pair::new(V5);
        let mut client = Connection::client(Config::default());
        let mut c = p.connect_packet(true);
        c.properties.authentication_method = method.map(s);
        client.connect(p.now, c).unwrap();
        while client.poll_transmit().is_some() {}
        client.handle_input(p.now, &auth(reason_code, method_in_auth));
        let case = format!("{method:?} {reason_code:?} {method_in_auth:?}");
        assert_auth_taken(client.poll_event(), allowed, &case);
    }
}

#[test]
fn answers_to_what_came_before_a_close_still_leave() {
    // A SUBSCRIBE, a PINGREQ and a DISCONNECT in one read: the close is reported after
    // the SUBSCRIBE, the SUBACK the application gives it is sent ([MQTT-3.8.4-1]), and
    // the PINGRESP follows it ([MQTT-3.12.4-1]), in the order of what they answer.
    let p = Pair::new(V5);
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: pid(7),
        properties: Default::default(),
        subscriptions: vec![Subscription {
            filter: TopicFilter::new("a/+").unwrap(),
            options: Default::default(),
        }],
    });
    for disconnect in [true, false] {
        let mut server = open_server(&p, Config::default());
        let mut input = encode(V5, subscribe.clone()).to_vec();
        input.extend_from_slice(&encode(V5, Packet::PingReq));
        if disconnect {
            input.extend_from_slice(&encode(V5, Packet::Disconnect(Disconnect::default())));
        }
        server.handle_input(p.now, &input);
        assert!(matches!(server.poll_event(), Some(Event::Subscribe(_))));
        server
            .suback(p.now, pid(7), vec![ReasonCode::Success], Default::default())
            .unwrap();
        if disconnect {
            assert!(matches!(
                server.poll_event(),
                Some(Event::Closed(CloseReason::Disconnected { .. }))
            ));
            assert!(server.is_closed());
        } else {
            assert_eq!(server.poll_event(), None);
        }
        let out = sent(&mut server);
        assert!(
            matches!(&out[..], [Packet::SubAck(a), Packet::PingResp] if a.packet_id == pid(7)),
            "{out:?}"
        );
    }

    // A violation in the same read as a PUBLISH: the PUBLISH's PUBACK leaves before the
    // DISCONNECT that reports the violation ([MQTT-4.13.1-1]), here a second QoS 1
    // message over a Receive Maximum of 1 ([MQTT-3.3.4-9]).
    let config = Config {
        manual_acks: true,
        receive_maximum: 1,
        ..Config::default()
    };
    let mut server = open_server(&p, config);
    let mut input = vec![];
    for id in [1, 2] {
        let mut m = msg("t", "m", QoS::AtLeastOnce);
        m.packet_id = Some(pid(id));
        input.extend_from_slice(&encode(V5, Packet::Publish(m)));
    }
    server.handle_input(p.now, &input);
    assert!(matches!(server.poll_event(), Some(Event::Message(_))));
    // Nothing more is read, nor sent before the application answers.
    server.handle_input(p.now, b"\xc0\x00");
    assert_eq!(server.poll_transmit(), None);
    server.ack(p.now, pid(1), ReasonCode::Success).unwrap();
    assert_eq!(
        server.poll_event(),
        Some(Event::Closed(CloseReason::Violation(
            Violation::ReceiveMaximumExceeded
        )))
    );
    let out = sent(&mut server);
    assert!(
        matches!(&out[..], [Packet::PubAck(a), Packet::Disconnect(d)]
            if a.packet_id == pid(1) && d.reason_code == ReasonCode::ReceiveMaximumExceeded),
        "{out:?}"
    );
    assert_eq!(server.poll_event(), None);
}

#[test]
fn second_connect_is_a_violation() {
    // [MQTT-3.1.0-2]
    for v in ALL {
        let mut p = Pair::new(v);
        p.clear();
        let c = encode(v, Packet::Connect(Box::new(p.connect_packet(true))));
        p.server.handle_input(p.now, &c);
        p.auto_server = false;
        p.link_up = false;
        p.drive();
        assert_eq!(
            closed(&p.server_events),
            Some(CloseReason::Violation(Violation::SecondConnect))
        );
        let sent = p.server_packets();
        if v == V5 {
            assert_eq!(
                sent,
                vec![Packet::Disconnect(Disconnect {
                    reason_code: ReasonCode::ProtocolError,
                    ..Default::default()
                })]
            );
        } else {
            assert!(sent.is_empty(), "3.x servers send no DISCONNECT");
        }
        // Input after the close is ignored.
        p.server.handle_input(p.now, b"\xc0\x00");
        assert_eq!(p.server.poll_event(), None);
        assert_eq!(p.server.poll_transmit(), None);
    }
}

#[test]
fn connack_must_come_first() {
    // [MQTT-3.2.0-1]
    let mut client = Connection::client(Config::default());
    let t = Pair::new(V5).now;
    client.connect(t, Connect::new(V3_1_1, s("c"))).unwrap();
    let _ = client.poll_transmit();
    client.handle_input(t, &encode(V3_1_1, Packet::PingResp));
    assert_eq!(
        client.poll_event(),
        Some(Event::Closed(CloseReason::Violation(
            Violation::UnexpectedPacket(PacketType::PingResp)
        )))
    );
}

#[test]
fn connect_timeout() {
    let t0 = Pair::new(V5).now;
    let mut server = Connection::server(Config::default(), t0);
    assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    server.handle_timeout(t0 + Duration::from_secs(9));
    assert_eq!(server.poll_event(), None);
    server.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(
        server.poll_event(),
        Some(Event::Closed(CloseReason::ConnectTimeout))
    );
    // A client without CONNACK in time.
    let mut client = Connection::client(Config::default());
    client.connect(t0, Connect::new(V5, s("c"))).unwrap();
    client.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(
        client.poll_event(),
        Some(Event::Closed(CloseReason::ConnectTimeout))
    );
}

#[test]
fn reject_sends_connack_and_closes() {
    for (v, code) in [(V3_1_1, 5u8), (V5, 0x87)] {
        let mut p = Pair::new(v);
        p.auto_server = false;
        p.reconnect_fresh();
        let Some(Event::ConnectReceived(_)) = p.server_events.first() else {
            panic!("CONNECT reaches the application");
        };
        p.server.reject(p.now, ReasonCode::NotAuthorized).unwrap();
        p.drive();
        let Packet::ConnAck(c) = &p.server_packets()[0] else {
            panic!("CONNACK");
        };
        assert_eq!(c.reason_code, ReasonCode::NotAuthorized);
        let raw = p.server_sent.concat();
        assert_eq!(raw[3], code);
        assert_eq!(
            closed(&p.client_events),
            Some(CloseReason::Refused(ReasonCode::NotAuthorized))
        );
        assert!(p.server.is_closed());
    }
}

impl Pair {
    /// Closes the current connection and opens a fresh one, without connecting.
    fn reconnect_fresh(&mut self) {
        self.cut();
        self.client = Connection::client(self.client_config.clone());
        self.server = Connection::server(self.server_config.clone(), self.now);
        self.clear();
        self.connect(true);
    }
}

fn delivered(events: &[Event]) -> Vec<(u16, ReasonCode)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Delivered {
                packet_id,
                reason_code,
            } => Some((packet_id.get(), *reason_code)),
            _ => None,
        })
        .collect()
}

#[test]
fn qos_0_1_2_client_to_server() {
    for v in ALL {
        let mut p = Pair::new(v);
        p.clear();
        for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            p.client.publish(p.now, msg("a/b", "x", q)).unwrap();
        }
        p.drive();
        let got: Vec<QoS> = p.server_messages().iter().map(|m| m.qos).collect();
        assert_eq!(got, [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]);
        // [MQTT-4.3.2-1] [MQTT-4.3.3-1]: QoS 1/2 get unused, non-zero packet ids
        // ([MQTT-2.2.1-3]); both complete and the ids are free again.
        assert_eq!(
            delivered(&p.client_events),
            [(1, ReasonCode::Success), (2, ReasonCode::Success)]
        );
        assert_eq!(p.client.packet_ids_in_use(), 0);
        assert_eq!(p.client.inflight(), 0);
        let types: Vec<PacketType> = p.client_packets().iter().map(|p| p.packet_type()).collect();
        assert_eq!(
            types,
            [
                PacketType::Publish,
                PacketType::Publish,
                PacketType::Publish,
                PacketType::PubRel
            ]
        );
        let types: Vec<PacketType> = p.server_packets().iter().map(|p| p.packet_type()).collect();
        assert_eq!(
            types,
            [PacketType::PubAck, PacketType::PubRec, PacketType::PubComp]
        );
    }
}

#[test]
fn qos_0_1_2_server_to_client() {
    for v in ALL {
        let mut p = Pair::new(v);
        p.clear();
        for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            p.server.publish(p.now, msg("a/b", "x", q)).unwrap();
        }
        p.drive();
        let got: Vec<QoS> = p.client_messages().iter().map(|m| m.qos).collect();
        assert_eq!(got, [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]);
        assert_eq!(delivered(&p.server_events).len(), 2);
        assert_eq!(p.server.packet_ids_in_use(), 0);
    }
}

#[test]
fn packet_ids_are_not_reused_while_in_use() {
    // [MQTT-2.2.1-3] non-zero; [MQTT-4.3.2-1] unused. The inflight window is separate:
    // with a window of 2, ids keep advancing while queued messages wait.
    let cfg = Config {
        max_inflight: 2,
        ..Config::default()
    };
    let mut p = Pair::with_configs(V3_1_1, cfg, Config::default());
    p.link_up = false;
    let ids: Vec<u16> = (0..5)
        .map(|_| {
            p.client
                .publish(p.now, msg("t", "x", QoS::AtLeastOnce))
                .unwrap()
                .unwrap()
                .get()
        })
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    assert_eq!(p.client.inflight(), 2);
    assert_eq!(p.client.queued(), 3);
    assert_eq!(p.client.packet_ids_in_use(), 5);
}

#[test]
fn inflight_window_follows_peer_receive_maximum() {
    // 5.0 [MQTT-3.3.4-7]: no more unacknowledged QoS 1/2 PUBLISH than the server's
    // Receive Maximum; the rest wait in order.
    let server = Config {
        receive_maximum: 2,
        manual_acks: true,
        ..Config::default()
    };
    let mut p = Pair::with_configs(V5, Config::default(), server);
    assert_eq!(p.client.inflight_limit(), 2);
    p.clear();
    for i in 0..5 {
        p.client
            .publish(p.now, msg("t", &i.to_string(), QoS::AtLeastOnce))
            .unwrap();
    }
    p.drive();
    assert_eq!(p.server_messages().len(), 2);
    assert_eq!(p.client.inflight(), 2);
    assert_eq!(p.client.queued(), 3);
    // Each acknowledgement lets one more through, in order.
    for expect in 3..=5 {
        let id = p.server_messages()[expect - 3].packet_id.unwrap();
        p.server.ack(p.now, id, ReasonCode::Success).unwrap();
        p.drive();
        assert_eq!(p.server_messages().len(), expect);
        assert!(p.client.inflight() <= 2);
    }
    let payloads: Vec<Vec<u8>> = p
        .server_messages()
        .iter()
        .map(|m| m.payload.to_vec())
        .collect();
    assert_eq!(payloads, [b"0", b"1", b"2", b"3", b"4"].map(|b| b.to_vec()));
}

#[test]
fn full_queue_hands_the_message_back() {
    let cfg = Config {
        max_inflight: 1,
        max_queued_messages: 2,
        ..Config::default()
    };
    let mut p = Pair::with_configs(V3_1_1, cfg, Config::default());
    p.link_up = false;
    for _ in 0..3 {
        p.client
            .publish(p.now, msg("t", "x", QoS::AtLeastOnce))
            .unwrap();
    }
    let err = p
        .client
        .publish(p.now, msg("t", "y", QoS::AtLeastOnce))
        .unwrap_err();
    let UsageError::QueueFull(back) = err else {
        panic!("queue full expected, got {err:?}");
    };
    assert_eq!(&back.payload[..], b"y");
    assert_eq!(p.client.queued(), 2);
    // The byte bound too.
    let cfg = Config {
        max_inflight: 1,
        max_queued_bytes: 3,
        ..Config::default()
    };
    let mut p = Pair::with_configs(V3_1_1, cfg, Config::default());
    p.link_up = false;
    p.client
        .publish(p.now, msg("t", "first", QoS::AtLeastOnce))
        .unwrap();
    p.client
        .publish(p.now, msg("t", "abc", QoS::AtLeastOnce))
        .unwrap();
    assert!(matches!(
        p.client.publish(p.now, msg("t", "d", QoS::AtLeastOnce)),
        Err(UsageError::QueueFull(_))
    ));
}

#[test]
fn exceeding_our_receive_maximum_is_disconnected() {
    // 5.0 [MQTT-3.3.4-9]: the server disconnects with 0x93.
    let server = Config {
        receive_maximum: 1,
        manual_acks: true,
        ..Config::default()
    };
    let mut p = Pair::with_configs(V5, Config::default(), server);
    p.clear();
    for id in [1, 2] {
        let mut m = msg("t", "x", QoS::AtLeastOnce);
        m.packet_id = Some(pid(id));
        p.server
            .handle_input(p.now, &encode(V5, Packet::Publish(m)));
    }
    p.link_up = false;
    p.drive();
    assert_eq!(
        closed(&p.server_events),
        Some(CloseReason::Violation(Violation::ReceiveMaximumExceeded))
    );
    assert_eq!(
        p.server_packets(),
        [Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::ReceiveMaximumExceeded,
            ..Default::default()
        })]
    );
}

#[test]
fn qos2_duplicate_before_pubrel_is_not_delivered_again() {
    for v in ALL {
        let mut p = Pair::new(v);
        p.clear();
        p.link_up = false;
        let mut m = msg("t", "once", QoS::ExactlyOnce);
        m.packet_id = Some(pid(7));
        let first = encode(v, Packet::Publish(m.clone()));
        m.dup = true;
        let again = encode(v, Packet::Publish(m));
        p.server.handle_input(p.now, &first);
        p.server.handle_input(p.now, &again);
        p.drive();
        assert_eq!(p.server_messages().len(), 1, "{v}: delivered once");
        let rec = Packet::PubRec(PubResponse::new(pid(7)));
        assert_eq!(p.server_packets(), [rec.clone(), rec], "{v}: PUBREC twice");
        // PUBREL releases it; PUBCOMP answers.
        p.server
            .handle_input(p.now, &encode(v, Packet::PubRel(PubResponse::new(pid(7)))));
        // After release the same id is a new message.
        p.server.handle_input(p.now, &first);
        p.drive();
        assert_eq!(p.server_messages().len(), 2);
    }
}

#[test]
fn pubrel_for_unknown_id_gets_pubcomp() {
    for (v, code) in [
        (V3_1_1, ReasonCode::Success),
        (V5, ReasonCode::PacketIdentifierNotFound),
    ] {
        let mut p = Pair::new(v);
        p.clear();
        p.link_up = false;
        p.server
            .handle_input(p.now, &encode(v, Packet::PubRel(PubResponse::new(pid(9)))));
        p.drive();
        let mut comp = PubResponse::new(pid(9));
        comp.reason_code = code;
        assert_eq!(p.server_packets(), [Packet::PubComp(comp)]);
        assert!(p.server.is_open());
    }
}

#[test]
fn acks_leave_in_arrival_order() {
    // [MQTT-4.6.0-2] PUBACK and [MQTT-4.6.0-3] PUBREC in the order the PUBLISHes arrived,
    // even when the application acknowledges out of order.
    let server = Config {
        manual_acks: true,
        ..Config::default()
    };
    let mut p = Pair::with_configs(V5, Config::default(), server);
    p.clear();
    p.link_up = false;
    let qos = [QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::AtLeastOnce];
    for (i, q) in qos.iter().enumerate() {
        let mut m = msg("t", "x", *q);
        m.packet_id = Some(pid(i as u16 + 1));
        p.server
            .handle_input(p.now, &encode(V5, Packet::Publish(m)));
    }
    p.drive();
    assert!(p.server_packets().is_empty());
    p.server.ack(p.now, pid(3), ReasonCode::Success).unwrap();
    p.server.ack(p.now, pid(2), ReasonCode::Success).unwrap();
    p.drive();
    assert!(p.server_packets().is_empty(), "waits for message 1");
    p.server.ack(p.now, pid(1), ReasonCode::Success).unwrap();
    p.drive();
    let ids: Vec<(PacketType, u16)> = p
        .server_packets()
        .iter()
        .map(|pk| match pk {
            Packet::PubAck(r) | Packet::PubRec(r) => (pk.packet_type(), r.packet_id.get()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        ids,
        [
            (PacketType::PubAck, 1),
            (PacketType::PubRec, 2),
            (PacketType::PubAck, 3)
        ]
    );
    assert_eq!(
        p.server.ack(p.now, pid(1), ReasonCode::Success),
        Err(UsageError::UnknownPacketId)
    );
}

#[test]
fn session_resume_resends_in_original_order() {
    // [MQTT-4.4.0-1]: on resume, unacknowledged PUBLISH (with DUP=1, [MQTT-3.3.1-1]) and
    // PUBREL are resent in their original order ([MQTT-4.6.0-1]).
    for v in [V3_1_1, V5] {
        let mut p = Pair::new(v);
        p.reconnect_with(false);
        p.clear();
        // m1 QoS 1, m2 QoS 2 reaches PUBREC (then PUBREL is lost), m3 QoS 2 not acked.
        p.link_up = false;
        for (name, q) in [
            ("m1", QoS::AtLeastOnce),
            ("m2", QoS::ExactlyOnce),
            ("m3", QoS::ExactlyOnce),
        ] {
            p.client.publish(p.now, msg("t", name, q)).unwrap();
        }
        p.drive();
        p.client
            .handle_input(p.now, &encode(v, Packet::PubRec(PubResponse::new(pid(2)))));
        p.drive();
        p.cut();
        p.clear();
        p.reconnect(false);
        let sent = p.client_packets();
        let summary: Vec<String> = sent
            .iter()
            .map(|pk| match pk {
                Packet::Connect(_) => "CONNECT".into(),
                Packet::Publish(m) => format!(
                    "PUBLISH {} dup={} id={}",
                    String::from_utf8_lossy(&m.payload),
                    m.dup,
                    m.packet_id.unwrap()
                ),
                Packet::PubRel(r) => format!("PUBREL {}", r.packet_id),
                other => format!("{:?}", other.packet_type()),
            })
            .collect();
        assert_eq!(
            summary[..4],
            [
                "CONNECT",
                "PUBLISH m1 dup=true id=1",
                "PUBREL 2",
                "PUBLISH m3 dup=true id=3"
            ],
            "{v}"
        );
        // Everything completes exactly once.
        assert_eq!(p.client.inflight(), 0);
        let names: Vec<String> = p
            .server_messages()
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into())
            .collect();
        assert_eq!(names, ["m1", "m3"], "m2 was delivered before the cut");
    }
}

impl Pair {
    /// Reconnects once so that both sides have a persistent session.
    fn reconnect_with(&mut self, clean_start: bool) {
        self.cut();
        self.reconnect(clean_start);
    }
}

#[test]
fn qos2_exactly_once_across_reconnect() {
    // The server received the QoS 2 PUBLISH and sent PUBREC, which was lost; the client
    // resends after reconnecting; the server must not deliver it again.
    let mut p = Pair::new(V5);
    p.reconnect_with(false);
    p.clear();
    p.client
        .publish(p.now, msg("t", "once", QoS::ExactlyOnce))
        .unwrap();
    let b = p.client.poll_transmit().unwrap();
    p.server.handle_input(p.now, &b);
    let _lost_pubrec = p.server.poll_transmit();
    p.drive();
    assert_eq!(p.server_messages().len(), 1);
    p.cut();
    p.reconnect(false);
    p.drive();
    assert_eq!(p.server_messages().len(), 1, "not delivered again");
    assert_eq!(delivered(&p.client_events).len(), 1);
    assert_eq!(p.client.inflight(), 0);
    assert!(p.server.state().incoming_qos2.is_empty());
}

#[test]
fn session_not_present_discards_the_client_state() {
    let mut p = Pair::new(V5);
    p.reconnect_with(false);
    p.clear();
    p.link_up = false;
    p.client
        .publish(p.now, msg("t", "lost", QoS::AtLeastOnce))
        .unwrap();
    p.drive();
    p.cut();
    // The server forgot the session: a fresh server, the client resumes its state.
    let old = std::mem::replace(&mut p.client, Connection::client(Config::default()));
    p.client = Connection::client_with_state(Config::default(), old.into_state());
    p.server = Connection::server(Config::default(), p.now);
    p.server_session = None;
    p.link_up = true;
    p.connect(false);
    assert!(p.client_events.iter().any(|e| matches!(
        e,
        Event::Dropped { reason: DropReason::SessionLost, publish } if &publish.payload[..] == b"lost"
    )));
    assert_eq!(p.client.inflight(), 0);
    assert_eq!(p.client.packet_ids_in_use(), 0);
}

#[test]
fn keep_alive_client_pings_and_server_answers() {
    // 3.1.1 [MQTT-3.1.2-23], 5.0 [MQTT-3.1.2-20]: the client sends PINGREQ when idle;
    // [MQTT-3.12.4-1]: the server answers PINGRESP.
    let mut p = Pair::new(V3_1_1);
    p.clear();
    p.advance(Duration::from_secs(59));
    assert!(p.client_packets().is_empty());
    p.advance(Duration::from_secs(1));
    assert_eq!(p.client_packets(), [Packet::PingReq]);
    assert_eq!(p.server_packets(), [Packet::PingResp]);
    // Hours of idleness: a ping a minute, the connection stays up.
    p.advance(Duration::from_secs(3600));
    assert!(p.client.is_open() && p.server.is_open());
    assert_eq!(p.client_packets().len(), 61);
}

#[test]
fn keep_alive_client_closes_without_pingresp() {
    let mut p = Pair::new(V5);
    p.clear();
    p.link_up = false;
    p.advance(Duration::from_secs(60));
    assert_eq!(p.client_packets(), [Packet::PingReq]);
    p.advance(Duration::from_secs(10));
    assert_eq!(
        closed(&p.client_events),
        Some(CloseReason::KeepAliveTimeout)
    );
}

#[test]
fn keep_alive_server_closes_after_one_and_a_half_intervals() {
    // 3.1.1 [MQTT-3.1.2-24], 5.0 [MQTT-3.1.2-22]
    for v in [V3_1_1, V5] {
        let mut p = Pair::new(v);
        p.clear();
        // A silent client: its pings are lost on the way.
        p.link_up = false;
        p.advance(Duration::from_secs(89));
        assert!(p.server.is_open());
        p.advance(Duration::from_secs(1));
        assert_eq!(
            closed(&p.server_events),
            Some(CloseReason::KeepAliveTimeout)
        );
        if v == V5 {
            assert_eq!(
                p.server_packets(),
                [Packet::Disconnect(Disconnect {
                    reason_code: ReasonCode::KeepAliveTimeout,
                    ..Default::default()
                })]
            );
        }
    }
}

#[test]
fn keep_alive_zero_turns_it_off() {
    let mut p = Pair::new(V3_1_1);
    p.keep_alive = 0;
    p.reconnect_fresh();
    p.clear();
    p.link_up = false;
    p.advance(Duration::from_secs(86_400));
    assert!(p.client.is_open() && p.server.is_open());
    assert!(p.client_packets().is_empty());
    assert_eq!(p.client.poll_timeout(), None);
    assert_eq!(p.server.poll_timeout(), None);
}

#[test]
fn server_keep_alive_overrides() {
    // 5.0 [MQTT-3.1.2-21]: the client uses the Server Keep Alive.
    let server = Config {
        server_keep_alive: Some(5),
        ..Config::default()
    };
    let mut p = Pair::with_configs(V5, Config::default(), server);
    assert_eq!(p.client.keep_alive(), Duration::from_secs(5));
    assert_eq!(p.server.keep_alive(), Duration::from_secs(5));
    p.clear();
    p.advance(Duration::from_secs(5));
    assert_eq!(p.client_packets(), [Packet::PingReq]);
}

#[test]
fn topic_aliases_both_ways() {
    // 5.0 [MQTT-3.3.2-9]..[MQTT-3.3.2-12]: aliases within the peer's Topic Alias Maximum.
    let client = Config {
        outgoing_topic_aliases: true,
        ..Config::default()
    };
    let server = Config {
        topic_alias_maximum: 1,
        ..Config::default()
    };
    let mut p = Pair::with_configs(V5, client, server);
    p.clear();
    for t in ["long/topic/name", "long/topic/name", "other"] {
        p.client
            .publish(p.now, msg(t, "x", QoS::AtMostOnce))
            .unwrap();
    }
    p.drive();
    let wire: Vec<(String, Option<u16>)> = p
        .client_packets()
        .iter()
        .map(|pk| match pk {
            Packet::Publish(m) => (
                m.topic.to_string(),
                m.properties.topic_alias.map(|a| a.get()),
            ),
            _ => panic!(),
        })
        .collect();
    assert_eq!(
        wire,
        [
            ("long/topic/name".to_string(), Some(1)),
            (String::new(), Some(1)),
            ("other".to_string(), None)
        ]
    );
    // The server delivers full topics.
    let topics: Vec<String> = p
        .server_messages()
        .iter()
        .map(|m| m.topic.to_string())
        .collect();
    assert_eq!(topics, ["long/topic/name", "long/topic/name", "other"]);
}

#[test]
fn topic_alias_violations() {
    let mut p = Pair::new(V5);
    p.clear();
    let mut m = msg("t", "x", QoS::AtMostOnce);
    m.properties.topic_alias = std::num::NonZeroU16::new(17);
    p.server
        .handle_input(p.now, &encode(V5, Packet::Publish(m)));
    p.link_up = false;
    p.drive();
    assert_eq!(
        closed(&p.server_events),
        Some(CloseReason::Violation(Violation::TopicAliasTooLarge(17)))
    );
    assert_eq!(
        p.server_packets()[0],
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::TopicAliasInvalid,
            ..Default::default()
        })
    );
    let mut p = Pair::new(V5);
    p.clear();
    let mut m = Publish::new(TopicName::empty(), "x");
    m.properties.topic_alias = std::num::NonZeroU16::new(3);
    p.server
        .handle_input(p.now, &encode(V5, Packet::Publish(m)));
    p.drive();
    assert_eq!(
        closed(&p.server_events),
        Some(CloseReason::Violation(Violation::UnknownTopicAlias(3)))
    );
}

#[test]
fn message_too_large_for_the_peer_is_dropped() {
    // 5.0 [MQTT-3.1.2-24], 5.0 [MQTT-3.1.2-25]: never send a packet above the client's Maximum
    // Packet Size; the message is dropped as if sent.
    let client = Config {
        max_packet_size: 64,
        ..Config::default()
    };
    let mut p = Pair::with_configs(V5, client, Config::default());
    p.clear();
    let big = "x".repeat(100);
    let id = p
        .server
        .publish(p.now, msg("t", &big, QoS::AtLeastOnce))
        .unwrap();
    p.server
        .publish(p.now, msg("t", "small", QoS::AtLeastOnce))
        .unwrap();
    p.drive();
    assert!(id.is_some());
    assert!(p.server_events.iter().any(|e| matches!(
        e,
        Event::Dropped {
            reason: DropReason::TooLarge,
            ..
        }
    )));
    let got: Vec<Vec<u8>> = p
        .client_messages()
        .iter()
        .map(|m| m.payload.to_vec())
        .collect();
    assert_eq!(got, [b"small".to_vec()]);
    assert_eq!(p.server.packet_ids_in_use(), 0);
    assert!(p.server_sent.iter().all(|b| b.len() <= 64));
}

#[test]
fn subscribe_and_unsubscribe() {
    for v in ALL {
        let mut p = Pair::new(v);
        p.clear();
        let sub = Subscription {
            filter: TopicFilter::new("a/+").unwrap(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        };
        let id = p
            .client
            .subscribe(p.now, vec![sub], Default::default())
            .unwrap();
        p.drive();
        assert!(p.client_events.iter().any(|e| matches!(
            e,
            Event::SubAck(s) if s.packet_id == id && s.reason_codes == [ReasonCode::GrantedQoS1]
        )));
        let id = p
            .client
            .unsubscribe(
                p.now,
                vec![TopicFilter::new("a/+").unwrap()],
                Default::default(),
            )
            .unwrap();
        p.drive();
        assert!(p
            .client_events
            .iter()
            .any(|e| matches!(e, Event::UnsubAck(u) if u.packet_id == id)));
        assert_eq!(p.client.packet_ids_in_use(), 0);
    }
}

#[test]
fn peer_disconnect_and_session_expiry_rule() {
    let mut p = Pair::new(V5);
    p.clear();
    p.client
        .disconnect(
            p.now,
            ReasonCode::DisconnectWithWillMessage,
            Default::default(),
        )
        .unwrap();
    p.drive();
    assert!(matches!(
        closed(&p.server_events),
        Some(CloseReason::Disconnected {
            reason_code: ReasonCode::DisconnectWithWillMessage,
            ..
        })
    ));
    // CONNECT with Session Expiry 0, then DISCONNECT with a non-zero one.
    let mut p = Pair::new(V5);
    p.clear();
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(60);
    p.server
        .handle_input(p.now, &encode(V5, Packet::Disconnect(d)));
    p.drive();
    assert_eq!(
        closed(&p.server_events),
        Some(CloseReason::Violation(Violation::SessionExpiryAfterZero))
    );
}

#[test]
fn server_rejects_client_only_packets_and_vice_versa() {
    for v in [V3_1_1, V5] {
        let mut p = Pair::new(v);
        p.server.handle_input(p.now, &encode(v, Packet::PingResp));
        p.drive();
        assert_eq!(
            closed(&p.server_events),
            Some(CloseReason::Violation(Violation::UnexpectedPacket(
                PacketType::PingResp
            )))
        );
        let mut p = Pair::new(v);
        p.client.handle_input(p.now, &encode(v, Packet::PingReq));
        p.drive();
        assert_eq!(
            closed(&p.client_events),
            Some(CloseReason::Violation(Violation::UnexpectedPacket(
                PacketType::PingReq
            )))
        );
    }
    // A 3.x server sends no DISCONNECT; a 3.x client receiving one is a violation.
    let mut p = Pair::new(V3_1_1);
    p.client.handle_input(
        p.now,
        &encode(V3_1_1, Packet::Disconnect(Disconnect::default())),
    );
    p.drive();
    assert!(matches!(
        closed(&p.client_events),
        Some(CloseReason::Violation(_))
    ));
}

#[test]
fn malformed_input_closes_with_its_reason_code() {
    let mut p = Pair::new(V5);
    p.clear();
    p.server.handle_input(p.now, b"\x36\x00");
    p.link_up = false;
    p.drive();
    assert_eq!(
        closed(&p.server_events),
        Some(CloseReason::Violation(Violation::Decode(
            DecodeError::InvalidQoS
        )))
    );
    assert_eq!(
        p.server_packets(),
        [Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::MalformedPacket,
            ..Default::default()
        })]
    );
}

#[test]
fn unsupported_protocol_level_gets_connack() {
    // [MQTT-3.1.2-2]: CONNACK 0x01 (3.1.1 form) and close.
    let t = Pair::new(V5).now;
    let mut server = Connection::server(Config::default(), t);
    server.handle_input(t, b"\x10\x0d\x00\x04MQTT\x07\x02\x00\x3c\x00\x01c");
    assert_eq!(&server.poll_transmit().unwrap()[..], b"\x20\x02\x00\x01");
    assert!(server.is_closed());
}

#[test]
fn a_bad_v5_connect_gets_a_connack_with_the_reason() {
    // 5.0 [MQTT-4.13.1-1]: a CONNECT that is malformed or a protocol error closes the
    // connection, and a CONNACK carrying the reason may say why first (nothing else may
    // come before CONNACK). 3.1.1 has no code for these: the connection just closes.
    let t = Pair::new(V5).now;
    for (bytes, code) in [
        // Receive Maximum 0.
        (
            &b"\x10\x13\x00\x04MQTT\x05\x02\x00\x00\x03\x21\x00\x00\x00\x03rm0"[..],
            ReasonCode::ProtocolError,
        ),
        // Session Expiry Interval twice.
        (
            b"\x10\x1a\x00\x04MQTT\x05\x02\x00\x00\x0a\x11\x00\x00\x00\x05\x11\x00\x00\x00\x05\x00\x03dup",
            ReasonCode::ProtocolError,
        ),
        // Will topic with a wildcard.
        (
            b"\x10\x17\x00\x04MQTT\x05\x06\x00\x00\x00\x00\x01w\x00\x00\x03a/+\x00\x01x",
            ReasonCode::TopicNameInvalid,
        ),
        // Reserved connect flag set.
        (
            b"\x10\x0e\x00\x04MQTT\x05\x03\x00\x00\x00\x00\x01r",
            ReasonCode::MalformedPacket,
        ),
    ] {
        let mut server = Connection::server(Config::default(), t);
        server.handle_input(t, bytes);
        let out = server.poll_transmit().expect("a CONNACK");
        let mut d = Decoder::client(V5);
        let got = d.decode(&mut bytes::BytesMut::from(&out[..])).unwrap();
        assert!(
            matches!(&got, Some(Packet::ConnAck(c)) if c.reason_code == code && !c.session_present),
            "{bytes:?}: {got:?}"
        );
        assert!(server.is_closed());
        // The connection's version is the one its CONNACK was written in.
        assert_eq!(server.version(), Some(V5));
    }
    let mut server = Connection::server(Config::default(), t);
    server.handle_input(t, b"\x10\x0d\x00\x04MQTT\x04\x03\x00\x00\x00\x01r");
    assert_eq!(
        server.poll_transmit(),
        None,
        "3.1.1: closed without CONNACK"
    );
    assert!(server.is_closed());
}

#[test]
fn packets_after_connect_wait_for_accept() {
    // A client may send packets right after CONNECT; they are handled after accept.
    let t = Pair::new(V3_1_1).now;
    let mut server = Connection::server(Config::default(), t);
    let mut bytes = encode(
        V3_1_1,
        Packet::Connect(Box::new(Connect::new(V3_1_1, s("c")))),
    )
    .to_vec();
    bytes.extend_from_slice(&encode(
        V3_1_1,
        Packet::Publish(msg("t", "early", QoS::AtMostOnce)),
    ));
    server.handle_input(t, &bytes);
    assert!(matches!(
        server.poll_event(),
        Some(Event::ConnectReceived(_))
    ));
    assert_eq!(server.poll_event(), None);
    server.accept(t, ConnAck::default(), None).unwrap();
    assert!(matches!(server.poll_event(), Some(Event::Message(m)) if &m.payload[..] == b"early"));
}

#[test]
fn input_held_before_accept_is_bounded() {
    // What waits for accept is held, up to one packet's worth (max_packet_size); a client
    // that sends more before it is let in is closed, with nothing sent (no CONNACK yet).
    let t = Pair::new(V5).now;
    let config = Config {
        max_packet_size: 1024,
        ..Config::default()
    };
    let publish = encode(
        V5,
        Packet::Publish(msg("t", &"x".repeat(200), QoS::AtMostOnce)),
    );
    let connect = encode(V5, Packet::Connect(Box::new(Connect::new(V5, s("c")))));
    // Up to the limit: held, then handled after accept.
    let mut server = Connection::server(config.clone(), t);
    server.handle_input(t, &connect);
    assert!(matches!(
        server.poll_event(),
        Some(Event::ConnectReceived(_))
    ));
    let fit = 1024 / publish.len();
    for _ in 0..fit {
        server.handle_input(t, &publish);
    }
    assert_eq!(server.poll_event(), None);
    server.accept(t, ConnAck::default(), None).unwrap();
    for _ in 0..fit {
        assert!(matches!(server.poll_event(), Some(Event::Message(_))));
    }
    // Beyond it: closed.
    let mut server = Connection::server(config, t);
    server.handle_input(t, &connect);
    assert!(matches!(
        server.poll_event(),
        Some(Event::ConnectReceived(_))
    ));
    for _ in 0..=fit {
        server.handle_input(t, &publish);
    }
    assert_eq!(
        server.poll_event(),
        Some(Event::Closed(CloseReason::Violation(
            Violation::InputBeforeConnAck((fit + 1) * publish.len())
        )))
    );
    assert_eq!(server.poll_transmit(), None);
    assert!(server.accept(t, ConnAck::default(), None).is_err());
}

#[test]
fn usage_errors() {
    let t = Pair::new(V5).now;
    let mut client = Connection::client(Config::default());
    assert_eq!(
        client.publish(t, msg("t", "x", QoS::AtLeastOnce)),
        Err(UsageError::WrongState)
    );
    assert_eq!(
        client.subscribe(t, vec![], Default::default()),
        Err(UsageError::WrongState)
    );
    let mut p = Pair::new(V5);
    p.cut();
    assert_eq!(
        p.client.publish(p.now, msg("t", "x", QoS::AtMostOnce)),
        Err(UsageError::Closed)
    );
    assert_eq!(
        p.server.accept(p.now, ConnAck::default(), None),
        Err(UsageError::Closed)
    );
    // QoS above the server's Maximum QoS (5.0 [MQTT-3.2.2-11]).
    let server = Config {
        maximum_qos: QoS::AtLeastOnce,
        ..Config::default()
    };
    let mut p = Pair::with_configs(V5, Config::default(), server);
    assert_eq!(
        p.client.publish(p.now, msg("t", "x", QoS::ExactlyOnce)),
        Err(UsageError::QoSNotSupported)
    );
}

#[test]
fn no_problem_information_when_the_client_asks_for_none() {
    // 5.0 [MQTT-3.1.2-29]: Reason String and User Properties only on PUBLISH, CONNACK and
    // DISCONNECT when Request Problem Information is 0.
    for want in [true, false] {
        let mut p = Pair::new(V5);
        p.auto_server = false;
        p.cut();
        p.client = Connection::client(Config::default());
        p.server = Connection::server(Config::default(), p.now);
        p.link_up = true;
        p.clear();
        let mut c = p.connect_packet(true);
        c.properties.request_problem_information = Some(want);
        p.client.connect(p.now, c).unwrap();
        p.drive();
        p.server.accept(p.now, ConnAck::default(), None).unwrap();
        p.drive();
        let sub = Subscription {
            filter: TopicFilter::new("a").unwrap(),
            options: Default::default(),
        };
        let id = p
            .client
            .subscribe(p.now, vec![sub], Default::default())
            .unwrap();
        p.drive();
        let props = AckProperties {
            reason_string: Some(s("granted")),
            ..Default::default()
        };
        p.server
            .suback(p.now, id, vec![ReasonCode::Success], props)
            .unwrap();
        p.drive();
        let Some(Event::SubAck(ack)) = p
            .client_events
            .iter()
            .find(|e| matches!(e, Event::SubAck(_)))
        else {
            panic!("SUBACK");
        };
        assert_eq!(ack.properties.reason_string.is_some(), want);
    }
}

#[test]
fn messages_queued_offline_get_packet_ids_on_resume() {
    // A broker queues messages for an offline session without packet ids; the connection
    // that resumes the session numbers them and sends them after the inflight resend.
    let mut p = Pair::new(V5);
    p.reconnect_with(false);
    p.cut();
    let mut state = p.server_session.take().unwrap_or_default();
    for i in 0..3 {
        state
            .queue
            .push_back(msg("t", &format!("q{i}"), QoS::AtLeastOnce));
    }
    p.server_session = Some(state);
    p.server = Connection::server(Config::default(), p.now);
    let old = std::mem::replace(&mut p.client, Connection::client(Config::default()));
    p.client = Connection::client_with_state(Config::default(), old.into_state());
    p.link_up = true;
    p.clear();
    p.connect(false);
    let got: Vec<Vec<u8>> = p
        .client_messages()
        .iter()
        .map(|m| m.payload.to_vec())
        .collect();
    assert_eq!(got, [b"q0".to_vec(), b"q1".to_vec(), b"q2".to_vec()]);
    assert_eq!(p.server.packet_ids_in_use(), 0);
}

#[test]
fn pop_queued_frees_the_packet_id() {
    let cfg = Config {
        max_inflight: 1,
        ..Config::default()
    };
    let mut p = Pair::with_configs(V3_1_1, cfg, Config::default());
    p.link_up = false;
    for i in 0..3 {
        p.client
            .publish(p.now, msg("t", &i.to_string(), QoS::AtLeastOnce))
            .unwrap();
    }
    assert_eq!(p.client.queued_bytes(), 2);
    let oldest = p.client.pop_queued().unwrap();
    assert_eq!(&oldest.payload[..], b"1");
    // Still carried, so the caller knows which message it was; no longer in use.
    assert_eq!(oldest.packet_id, Some(pid(2)));
    assert_eq!(p.client.packet_ids_in_use(), 2);
    assert_eq!(p.client.queued_bytes(), 1);
}

#[test]
fn encoded_once_publish_matches_a_fresh_encoding() {
    for v in ALL {
        for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let mut a = Pair::new(v);
            let mut b = Pair::new(v);
            a.clear();
            b.clear();
            let mut m = msg("fan/out", "shared payload", q);
            m.retain = true;
            let enc = EncodedPublish::new(&m, v).unwrap();
            // Use some packet ids first so the copy must rewrite its id.
            for p in [&mut a, &mut b] {
                p.link_up = false;
                if q != QoS::AtMostOnce {
                    for _ in 0..3 {
                        p.server.publish(p.now, msg("x", "y", q)).unwrap();
                    }
                }
            }
            a.server.publish(a.now, m.clone()).unwrap();
            b.server.publish_encoded(b.now, m.clone(), &enc).unwrap();
            a.drive();
            b.drive();
            assert_eq!(a.server_sent, b.server_sent, "{v} {q:?}");
        }
    }
}

#[test]
fn connack_too_large_for_the_client_closes_without_sending() {
    // 5.0 [MQTT-3.1.2-24]: nothing larger than the client's Maximum Packet Size is sent.
    let t = Pair::new(V5).now;
    let mut server = Connection::server(Config::default(), t);
    let mut c = Connect::new(V5, s("c"));
    c.properties.maximum_packet_size = std::num::NonZeroU32::new(4);
    server.handle_input(t, &encode(V5, Packet::Connect(Box::new(c))));
    assert!(matches!(
        server.poll_event(),
        Some(Event::ConnectReceived(_))
    ));
    let mut ack = ConnAck::default();
    ack.properties.reason_string = Some(s("a reason string that does not fit"));
    server.accept(t, ack, None).unwrap();
    assert_eq!(server.poll_transmit(), None);
    assert_eq!(
        server.poll_event(),
        Some(Event::Closed(CloseReason::Local(
            ReasonCode::PacketTooLarge
        )))
    );
    assert_eq!(server.poll_event(), None, "closed once");
    assert_eq!(server.poll_timeout(), None);
}

#[test]
fn queued_messages_respect_limits_learned_later() {
    // 5.0 [MQTT-3.2.2-11]: no PUBLISH above the server's Maximum QoS, even one queued
    // before CONNACK said so; the same for Retain Available.
    let server = Config {
        maximum_qos: QoS::AtLeastOnce,
        retain_available: false,
        ..Config::default()
    };
    let mut client = Connection::client(Config::default());
    let mut srv = Connection::server(server, Pair::new(V5).now);
    let t = Pair::new(V5).now;
    client.connect(t, Connect::new(V5, s("c"))).unwrap();
    client
        .publish(t, msg("t", "two", QoS::ExactlyOnce))
        .unwrap();
    let mut r = msg("t", "kept", QoS::AtMostOnce);
    r.retain = true;
    client.publish(t, r).unwrap();
    client
        .publish(t, msg("t", "one", QoS::AtLeastOnce))
        .unwrap();
    srv.handle_input(t, &client.poll_transmit().unwrap());
    let _ = srv.poll_event();
    srv.accept(t, ConnAck::default(), None).unwrap();
    client.handle_input(t, &srv.poll_transmit().unwrap());
    let mut dropped = vec![];
    while let Some(e) = client.poll_event() {
        if let Event::Dropped { reason, .. } = e {
            dropped.push(reason);
        }
    }
    assert_eq!(
        dropped,
        [DropReason::QoSNotSupported, DropReason::RetainNotSupported]
    );
    srv.handle_input(t, &client.poll_transmit().unwrap());
    assert!(!srv.is_closed());
    assert_eq!(client.packet_ids_in_use(), 1);
}

#[test]
fn a_dropped_publish_leaves_no_alias_behind() {
    let client = Config {
        max_packet_size: 60,
        ..Config::default()
    };
    let server = Config {
        outgoing_topic_aliases: true,
        ..Config::default()
    };
    let mut p = Pair::with_configs(V5, client, server);
    p.clear();
    p.server
        .publish(p.now, msg("a/topic", &"x".repeat(90), QoS::AtMostOnce))
        .unwrap();
    p.server
        .publish(p.now, msg("a/topic", "ok", QoS::AtMostOnce))
        .unwrap();
    p.drive();
    assert!(p.client.is_open());
    assert_eq!(p.client_messages()[0].topic.as_str(), "a/topic");
}

#[test]
fn resume_resends_within_the_new_receive_maximum() {
    // 5.0 [MQTT-3.3.4-7]: the window of the new connection bounds the resend too.
    let mut p = Pair::new(V5);
    p.reconnect_with(false);
    p.clear();
    p.link_up = false;
    for i in 0..3 {
        p.client
            .publish(p.now, msg("t", &i.to_string(), QoS::AtLeastOnce))
            .unwrap();
    }
    p.drive();
    assert_eq!(p.client.inflight(), 3);
    p.cut();
    p.server_config = Config {
        receive_maximum: 1,
        ..Config::default()
    };
    p.reconnect(false);
    assert!(p.client.inflight() <= 1);
    let got: Vec<(Vec<u8>, bool)> = p
        .server_messages()
        .iter()
        .map(|m| (m.payload.to_vec(), m.dup))
        .collect();
    assert_eq!(
        got,
        [
            (b"0".to_vec(), true),
            (b"1".to_vec(), true),
            (b"2".to_vec(), true)
        ],
        "all resent in order, with DUP=1"
    );
    assert!(p.server.is_open());
}

#[test]
fn more_usage_errors() {
    let server = Config {
        manual_acks: true,
        ..Config::default()
    };
    let mut p = Pair::with_configs(V5, Config::default(), server);
    let mut m = msg("t", "x", QoS::AtLeastOnce);
    m.packet_id = Some(pid(1));
    p.server
        .handle_input(p.now, &encode(V5, Packet::Publish(m)));
    assert_eq!(
        p.server
            .ack(p.now, pid(1), ReasonCode::PacketIdentifierNotFound),
        Err(UsageError::InvalidReasonCode(
            ReasonCode::PacketIdentifierNotFound
        ))
    );
    p.server.ack(p.now, pid(1), ReasonCode::Success).unwrap();
    // A session that began with expiry 0 cannot get one at DISCONNECT.
    let props = DisconnectProperties {
        session_expiry_interval: Some(10),
        ..Default::default()
    };
    assert_eq!(
        p.client.disconnect(p.now, ReasonCode::Success, props),
        Err(UsageError::InvalidSessionExpiry)
    );
}

/// Manual acks (a broker waiting for storage): the PUBACK or PUBREC has not left when the
/// connection ends; the client resends the message with its packet id, still in use
/// ([MQTT-2.2.1-3]). It is delivered once, and the acknowledgement the application gives
/// on the new connection answers it, once.
fn delivered_before_its_ack_is_not_delivered_again_after_resume(qos: QoS) {
    let server = Config {
        manual_acks: true,
        ..Config::default()
    };
    let mut p = Pair::with_configs(V5, Config::default(), server);
    p.reconnect_with(false);
    p.clear();
    p.client.publish(p.now, msg("t", "once", qos)).unwrap();
    p.drive();
    assert_eq!(p.server_messages().len(), 1);
    let id = p.server_messages()[0].packet_id.unwrap();
    p.cut();
    p.reconnect(false);
    p.drive();
    assert_eq!(p.server_messages().len(), 1, "not delivered again");
    assert!(
        delivered(&p.client_events).is_empty(),
        "no acknowledgement before the application gives it"
    );
    p.server.ack(p.now, id, ReasonCode::Success).unwrap();
    p.drive();
    assert_eq!(
        delivered(&p.client_events),
        [(id.get(), ReasonCode::Success)],
        "the flow completes"
    );
    assert_eq!(
        p.server.ack(p.now, id, ReasonCode::Success),
        Err(UsageError::UnknownPacketId),
        "one acknowledgement"
    );
}

#[test]
fn qos2_delivered_before_its_ack_is_not_delivered_again_after_resume() {
    delivered_before_its_ack_is_not_delivered_again_after_resume(QoS::ExactlyOnce);
}

#[test]
fn qos1_delivered_before_its_ack_is_not_delivered_again_after_resume() {
    delivered_before_its_ack_is_not_delivered_again_after_resume(QoS::AtLeastOnce);
}

#[test]
fn qos1_sent_twice_before_its_ack_is_delivered_and_acknowledged_once() {
    // A client that sends a QoS 1 PUBLISH again on the same connection before its PUBACK
    // (which 5.0 [MQTT-4.4.0-1] allows only after a reconnect) sends the same message:
    // its packet id is still in use ([MQTT-2.2.1-3]).
    let server = Config {
        manual_acks: true,
        ..Config::default()
    };
    let mut p = Pair::with_configs(V5, Config::default(), server);
    p.clear();
    let mut m = msg("t", "x", QoS::AtLeastOnce);
    m.packet_id = Some(pid(7));
    p.server
        .handle_input(p.now, &encode(V5, Packet::Publish(m.clone())));
    m.dup = true;
    p.server
        .handle_input(p.now, &encode(V5, Packet::Publish(m)));
    p.drive();
    assert_eq!(p.server_messages().len(), 1, "delivered once");
    p.server.ack(p.now, pid(7), ReasonCode::Success).unwrap();
    p.drive();
    let acks: Vec<Packet> = p.server_packets();
    assert_eq!(acks, [Packet::PubAck(PubResponse::new(pid(7)))]);
    // The id is free again: a new message with it is delivered.
    let mut again = msg("t", "y", QoS::AtLeastOnce);
    again.packet_id = Some(pid(7));
    p.server
        .handle_input(p.now, &encode(V5, Packet::Publish(again)));
    p.drive();
    assert_eq!(p.server_messages().len(), 2);
}

#[test]
fn queued_messages_expire() {
    // 5.0 [MQTT-3.3.2-5]: a message still waiting when its expiry passes is deleted; one
    // that goes out has the time it waited taken off its interval.
    let client = Config {
        manual_acks: true,
        ..Config::default()
    };
    let server = Config {
        max_inflight: 1,
        ..Config::default()
    };
    let mut p = Pair::with_configs(V5, client, server);
    p.clear();
    p.server
        .publish(p.now, msg("t", "first", QoS::AtLeastOnce))
        .unwrap();
    let mut short = msg("t", "short", QoS::AtLeastOnce);
    short.properties.message_expiry_interval = Some(5);
    p.server.publish(p.now, short).unwrap();
    let mut long = msg("t", "long", QoS::AtLeastOnce);
    long.properties.message_expiry_interval = Some(100);
    p.server.publish(p.now, long).unwrap();
    p.drive();
    assert_eq!(p.client_messages().len(), 1, "the window holds one");
    // The client acknowledges the first one 6 s later.
    p.now += std::time::Duration::from_secs(6);
    let id = p.client_messages()[0].packet_id.unwrap();
    p.client.ack(p.now, id, ReasonCode::Success).unwrap();
    p.drive();
    let got: Vec<(Vec<u8>, Option<u32>)> = p
        .client_messages()
        .iter()
        .map(|m| (m.payload.to_vec(), m.properties.message_expiry_interval))
        .collect();
    assert_eq!(
        got,
        [(b"first".to_vec(), None), (b"long".to_vec(), Some(94))]
    );
    assert!(p.server_events.iter().any(|e| matches!(
        e,
        Event::Dropped {
            reason: DropReason::Expired,
            ..
        }
    )));
}

#[test]
fn resend_respects_the_new_servers_limits() {
    // 5.0 [MQTT-3.2.2-11], [MQTT-3.2.2-14]: a session resumed against a server that now
    // allows less does not resend what it may no longer send.
    let mut p = Pair::new(V5);
    p.reconnect_with(false);
    p.clear();
    p.link_up = false;
    p.client
        .publish(p.now, msg("t", "two", QoS::ExactlyOnce))
        .unwrap();
    let mut r = msg("t", "kept", QoS::AtLeastOnce);
    r.retain = true;
    p.client.publish(p.now, r).unwrap();
    p.drive();
    p.cut();
    p.server_config = Config {
        maximum_qos: QoS::AtLeastOnce,
        retain_available: false,
        ..Config::default()
    };
    p.reconnect(false);
    assert!(p.server.is_open(), "no violation");
    let dropped: Vec<DropReason> = p
        .client_events
        .iter()
        .filter_map(|e| match e {
            Event::Dropped { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        dropped,
        [DropReason::QoSNotSupported, DropReason::RetainNotSupported]
    );
}

#[test]
fn qos2_steps_are_reported_for_persistence() {
    // Section 4.3.3: the sender resends PUBREL, never the PUBLISH, once PUBREC came; the
    // receiver's packet id is free after PUBREL. Both steps are events, so a broker can
    // record them.
    for v in ALL {
        let mut p = Pair::new(v);
        p.clear();
        let id = p
            .server
            .publish(p.now, msg("t", "x", QoS::ExactlyOnce))
            .unwrap()
            .unwrap();
        p.drive();
        assert!(
            p.server_events
                .iter()
                .any(|e| matches!(e, Event::Received { packet_id } if *packet_id == id)),
            "{v}: PUBREC reported"
        );
        assert!(
            p.client_events
                .iter()
                .any(|e| matches!(e, Event::Released { packet_id } if *packet_id == id)),
            "{v}: PUBREL reported"
        );
        let received = p
            .server_events
            .iter()
            .position(|e| matches!(e, Event::Received { .. }))
            .unwrap();
        let delivered = p
            .server_events
            .iter()
            .position(|e| matches!(e, Event::Delivered { .. }))
            .unwrap();
        assert!(received < delivered);
    }
}

#[test]
fn assigned_packet_ids_are_kept_on_resume() {
    // [MQTT-4.4.0-1]: resent with the original packet identifiers; ids given to queued
    // messages before the resume are the ones used.
    let mut state = SessionState::default();
    let mut sent = msg("t", "sent", QoS::ExactlyOnce);
    sent.packet_id = Some(pid(1));
    state.inflight.push_back(Inflight::Publish(sent));
    state.queue.push_back(msg("t", "a", QoS::AtLeastOnce));
    state.queue.push_back(msg("t", "b", QoS::AtMostOnce));
    state.queue.push_back(msg("t", "c", QoS::ExactlyOnce));
    state.assign_packet_ids();
    let ids: Vec<Option<u16>> = state
        .queue
        .iter()
        .map(|p| p.packet_id.map(|i| i.get()))
        .collect();
    assert_eq!(ids, [Some(2), None, Some(3)]);
    let mut p = Pair::new(V5);
    p.cut();
    p.clear();
    p.client = Connection::client(p.client_config.clone());
    p.server = Connection::server(p.server_config.clone(), p.now);
    p.server_session = Some(state);
    p.link_up = true;
    p.connect(false);
    let got: Vec<(String, Option<u16>)> = p
        .client_messages()
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(&m.payload).into_owned(),
                m.packet_id.map(|i| i.get()),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("sent".into(), Some(1)),
            ("a".into(), Some(2)),
            ("b".into(), None),
            ("c".into(), Some(3))
        ]
    );
}

#[test]
fn a_transmit_holds_no_more_memory_than_its_bytes() {
    for v in ALL {
        let mut p = Pair::new(v);
        // Rounds of four 1 KiB messages per transmit, encoded once as a broker does for
        // many subscribers. From the second round on the output buffer starts at 4 KiB
        // (the size of the last transmit, kept at most) and doubles to 8 KiB for the
        // fourth message: half of it would be handed out unused.
        let m = msg("t", &"x".repeat(1024), QoS::AtMostOnce);
        let encoded = EncodedPublish::new(&m, v).unwrap();
        for round in 0..3 {
            for _ in 0..4 {
                p.server
                    .publish_encoded(p.now, m.clone(), &encoded)
                    .unwrap();
            }
            let bytes = p.server.poll_transmit().unwrap();
            let len = bytes.len();
            assert!(len > 4 * m.payload.len(), "{v}: {len}");
            // The allocation behind the bytes (taken back whole: nothing else shares it).
            let held = Vec::from(bytes).capacity();
            assert_eq!(held, len, "{v}, round {round}: {len} bytes hold {held}");
        }
    }
}

#[test]
fn buffers_shrink_back_after_a_burst() {
    for v in ALL {
        let mut p = Pair::new(v);
        let big = "x".repeat(256 * 1024);
        for _ in 0..4 {
            p.client
                .publish(p.now, msg("t", &big, QoS::AtLeastOnce))
                .unwrap();
        }
        // The burst arrives in pieces, as a socket would hand it over.
        let bytes = p.client.poll_transmit().unwrap();
        assert!(bytes.len() > 4 * big.len());
        for chunk in bytes.chunks(10_000) {
            p.server.handle_input(p.now, chunk);
        }
        p.drive();
        assert_eq!(p.server_messages().len(), 4, "{v}");
        // Idle again: neither side keeps the burst's buffers.
        p.drive();
        assert!(
            p.server.buffer_capacity() <= 4096,
            "{v}: {}",
            p.server.buffer_capacity()
        );
        assert!(
            p.client.buffer_capacity() <= 4096,
            "{v}: {}",
            p.client.buffer_capacity()
        );
        // What an application does for a connection gone idle: nothing is kept.
        p.server.release_buffers();
        p.client.release_buffers();
        assert_eq!(p.server.buffer_capacity(), 0, "{v}");
        assert_eq!(p.client.buffer_capacity(), 0, "{v}");
    }
}

#[test]
fn delivery_events_can_be_turned_off() {
    // The PUBACK still ends the message's "unacknowledged" state ([MQTT-4.3.2-3]) and
    // frees its packet identifier; only the report is left out.
    for v in ALL {
        let mut p = Pair::new(v);
        p.clear();
        p.server.set_delivery_events(false);
        for q in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            p.server.publish(p.now, msg("a/b", "x", q)).unwrap();
        }
        p.drive();
        assert_eq!(p.client_messages().len(), 2, "{v}");
        assert!(delivered(&p.server_events).is_empty(), "{v}");
        assert_eq!(p.server.inflight(), 0, "{v}");
        assert_eq!(p.server.packet_ids_in_use(), 0, "{v}");
        p.server.set_delivery_events(true);
        p.server
            .publish(p.now, msg("a/b", "y", QoS::AtLeastOnce))
            .unwrap();
        p.drive();
        assert_eq!(delivered(&p.server_events).len(), 1, "{v}");
    }
}

#[test]
fn acknowledgements_are_read_from_any_chunking() {
    // PUBACKs and a PINGREQ read straight from the input, alone, split across reads, and
    // followed by a PUBLISH in the same read: each is handled once and in order.
    for v in [V3_1_1, V5] {
        let mut p = Pair::new(v);
        p.clear();
        let ids: Vec<PacketId> = (0..3)
            .map(|i| {
                p.server
                    .publish(p.now, msg("a/b", &format!("{i}"), QoS::AtLeastOnce))
                    .unwrap()
                    .unwrap()
            })
            .collect();
        assert_eq!(p.server.inflight(), 3);
        // The client's side, written by hand.
        let ack = |id: PacketId| encode(v, Packet::PubAck(PubResponse::new(id)));
        let mut publish = msg("c/d", "z", QoS::AtMostOnce);
        publish.packet_id = None;
        let mut input = Vec::new();
        input.extend_from_slice(&ack(ids[0]));
        input.extend_from_slice(&encode(v, Packet::PingReq));
        input.extend_from_slice(&ack(ids[1]));
        input.extend_from_slice(&encode(v, Packet::Publish(publish)));
        input.extend_from_slice(&ack(ids[2])[..2]);
        let now = p.now;
        p.server.handle_input(now, &input);
        assert_eq!(p.server.inflight(), 1, "{v}: two acknowledged");
        p.server.handle_input(now, &ack(ids[2])[2..]);
        assert_eq!(p.server.inflight(), 0, "{v}: the split one too");
        let mut events = vec![];
        while let Some(e) = p.server.poll_event() {
            events.push(e);
        }
        assert_eq!(
            delivered(&events),
            ids.iter()
                .map(|i| (i.get(), ReasonCode::Success))
                .collect::<Vec<_>>(),
            "{v}"
        );
        assert_eq!(messages(&events).len(), 1, "{v}: the PUBLISH between them");
        let out = p.server.poll_transmit().expect("PINGRESP");
        assert!(
            packets(v, &[out]).contains(&Packet::PingResp),
            "{v}: PINGREQ answered"
        );
        assert!(!p.server.is_closed());
    }
}

/// A client's three timers run at once: its keep-alive fires while CONNACK is still
/// awaited (a PINGREQ goes out, [MQTT-3.1.2-23]), the PINGRESP deadline starts, and the
/// connect deadline set before both still closes the connection on time. (A server's idle
/// timer shares its slot with the client's keep-alive; the server's timers are covered by
/// `keep_alive_server_closes_after_one_and_a_half_intervals` and `connect_timeout`.)
#[test]
fn client_timers_run_together_before_connack() {
    #[allow(clippy::disallowed_methods)]
    let t0 = std::time::Instant::now();
    let s = Duration::from_secs(1);
    let config = Config {
        connect_timeout: 3 * s,
        ping_timeout: 5 * s,
        ..Config::default()
    };
    let mut c = Connection::client(config);
    let mut connect = Connect::new(V3_1_1, MqttString::new("c").unwrap());
    connect.keep_alive = 1;
    c.connect(t0, connect).unwrap();
    let sent = c.poll_transmit().expect("CONNECT");
    assert!(matches!(packets(V3_1_1, &[sent])[..], [Packet::Connect(_)]));
    // Keep-alive (1 s) before connect (3 s).
    assert_eq!(c.poll_timeout(), Some(t0 + s));
    c.handle_timeout(t0 + s);
    let sent = c.poll_transmit().expect("PINGREQ");
    assert_eq!(packets(V3_1_1, &[sent]), [Packet::PingReq]);
    // The PINGREQ re-armed the keep-alive (2 s); PINGRESP is due at 6 s, CONNACK at 3 s.
    assert_eq!(c.poll_timeout(), Some(t0 + 2 * s));
    c.handle_timeout(t0 + 2 * s);
    assert!(
        c.poll_transmit().is_none(),
        "one PINGREQ outstanding at a time"
    );
    assert_eq!(c.poll_timeout(), Some(t0 + 3 * s));
    c.handle_timeout(t0 + 3 * s);
    let events: Vec<Event> = std::iter::from_fn(|| c.poll_event()).collect();
    assert_eq!(closed(&events), Some(CloseReason::ConnectTimeout));
}

/// Moves everything `from` has to write into `to`.
fn pass(from: &mut Connection, to: &mut Connection, now: std::time::Instant) {
    while let Some(b) = from.poll_transmit() {
        to.handle_input(now, &b);
    }
}

/// A server connection that subscribes and gets QoS 0 messages holds no delivery
/// state; the first QoS 1 message allocates it, and it is kept.
#[test]
fn delivery_state_comes_with_the_first_qos_1_message() {
    #[allow(clippy::disallowed_methods)] // a test: the clock starts the simulated time
    let now = std::time::Instant::now();
    let mut client = Connection::client(Config::default());
    let mut server = Connection::server(Config::default(), now);
    let id = MqttString::new("c").unwrap();
    client.connect(now, Connect::new(V3_1_1, id)).unwrap();
    pass(&mut client, &mut server, now);
    assert!(matches!(
        server.poll_event(),
        Some(Event::ConnectReceived(_))
    ));
    server.accept(now, ConnAck::default(), None).unwrap();
    pass(&mut server, &mut client, now);
    assert!(client.is_open());
    let sub = Subscription {
        filter: TopicFilter::new("t/#").unwrap(),
        options: SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        },
    };
    client
        .subscribe(now, vec![sub], Default::default())
        .unwrap();
    pass(&mut client, &mut server, now);
    let Some(Event::Subscribe(s)) = server.poll_event() else {
        panic!("no SUBSCRIBE");
    };
    let codes = vec![ReasonCode::GrantedQoS1];
    server
        .suback(now, s.packet_id, codes, Default::default())
        .unwrap();
    let topic = TopicName::new("t/a").unwrap();
    server
        .publish(now, Publish::new(topic.clone(), "0"))
        .unwrap();
    pass(&mut server, &mut client, now);
    assert!(!server.holds_delivery_state());
    assert!(
        client.holds_delivery_state(),
        "the client's SUBSCRIBE took an id"
    );

    let mut p = Publish::new(topic, "1");
    p.qos = QoS::AtLeastOnce;
    server.publish(now, p).unwrap();
    assert!(server.holds_delivery_state());
    assert_eq!(server.inflight(), 1);
    pass(&mut server, &mut client, now);
    pass(&mut client, &mut server, now);
    assert_eq!(server.inflight(), 0, "PUBACK completes it");
    assert!(server.holds_delivery_state(), "kept for the next one");
}

/// A resumed session whose PUBREL the new server's Maximum Packet Size cannot take
/// closes the connection ([MQTT-3.1.2-24]: nothing larger is sent), and nothing follows
/// the close: the PUBLISH behind the PUBREL is neither sent nor reported dropped, and
/// both stay in the session state for the next connection.
#[test]
fn a_close_while_resending_ends_the_events() {
    let mut publish = msg("t", "payload", QoS::AtLeastOnce);
    publish.packet_id = PacketId::new(2);
    let mut state = SessionState::default();
    state
        .inflight
        .push_back(Inflight::Released(PacketId::new(1).unwrap()));
    state.inflight.push_back(Inflight::Publish(publish));
    #[allow(clippy::disallowed_methods)] // a test: the clock starts the simulated time
    let now = std::time::Instant::now();
    let mut client = Connection::client_with_state(Config::default(), state);
    let mut connect = Connect::new(V5, MqttString::new("c").unwrap());
    connect.clean_start = false;
    client.connect(now, connect).unwrap();
    assert!(client.poll_transmit().is_some(), "CONNECT");
    // CONNACK: session present, Maximum Packet Size 3 (a PUBREL takes 4).
    client.handle_input(now, &[0x20, 8, 0x01, 0x00, 5, 0x27, 0, 0, 0, 3]);
    let mut events = vec![];
    while let Some(e) = client.poll_event() {
        events.push(e);
    }
    let closed = events
        .iter()
        .position(|e| matches!(e, Event::Closed(_)))
        .expect("closed");
    assert_eq!(
        closed,
        events.len() - 1,
        "events after the close: {events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Dropped { .. })),
        "{events:?}"
    );
    assert_eq!(client.into_state().inflight.len(), 2);
}
