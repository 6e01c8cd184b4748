//! Storage records and recovery: a whole broker in memory whose records go to a
//! `MemoryStore`; a crash drops the broker, the records not yet durable and the bytes not
//! yet written, and a new broker restores from the store. Clients keep their own session
//! state across the crash, as real clients do across a broker restart.

mod common;

use common::*;
use mqtt_broker::*;
use mqtt_proto::*;
use mqtt_session::Event;
use std::time::Duration;
use ProtocolVersion::{V3_1_1, V5};

fn sim() -> Sim {
    Sim::new(BrokerConfig {
        persistence: true,
        sys_interval: None,
        ..Default::default()
    })
}

fn records(sim: &Sim) -> Vec<Record> {
    sim.outputs
        .iter()
        .filter_map(|o| match o {
            Output::Store(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn acks(sim: &Sim, id: ConnId) -> usize {
    sim.clients[&id]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Delivered { .. }))
        .count()
}

#[test]
fn only_sessions_that_outlive_their_connection_are_recorded() {
    let mut sim = sim();
    let clean = sim.connect(V3_1_1, "clean", true);
    sim.subscribe(clean, "a", QoS::AtLeastOnce);
    let v5_zero = sim.connect(V5, "zero", true);
    sim.subscribe(v5_zero, "a", QoS::AtLeastOnce);
    let p = sim.connect(V5, "p", true);
    sim.publish(p, "a", "x", QoS::ExactlyOnce, false);
    assert_eq!(records(&sim), [], "nothing durable changed");
    assert_eq!(acks(&sim, p), 1, "acknowledged at once");

    let kept = sim.connect(V3_1_1, "kept", false);
    sim.subscribe(kept, "a", QoS::AtLeastOnce);
    let r = records(&sim);
    assert_eq!(
        r[0],
        Record::Session {
            client_id: MqttString::new("kept").unwrap(),
            expiry: BrokerConfig::default().persistent_session_expiry,
        }
    );
    assert!(matches!(&r[1], Record::Subscribed { subscription, .. }
        if subscription.filter.as_str() == "a"));
    // A clean start replaces the stored session: it ends, a new one begins.
    sim.cut(kept);
    sim.clear();
    sim.connect(V5, "kept", true);
    assert_eq!(
        records(&sim),
        [Record::SessionEnded {
            client_id: MqttString::new("kept").unwrap()
        }]
    );
    assert_eq!(sim.store.snapshot().sessions.len(), 0);
}

#[test]
fn session_expiry_changes_are_recorded() {
    // 5.0 [MQTT-3.14.2-2]-style: DISCONNECT may change a non-zero Session Expiry.
    let mut sim = sim();
    let s = sim.connect(V5, "s", false);
    let now = sim.now;
    let props = DisconnectProperties {
        session_expiry_interval: Some(60),
        ..Default::default()
    };
    sim.clients
        .get_mut(&s)
        .unwrap()
        .conn
        .disconnect(now, ReasonCode::Success, props)
        .unwrap();
    sim.run();
    assert_eq!(
        sim.store.snapshot().sessions["s"].expiry,
        Duration::from_secs(60)
    );
    // The session expires: the store forgets it.
    sim.advance(Duration::from_secs(61));
    assert!(sim.store.snapshot().sessions.is_empty());
}

#[test]
fn acknowledged_messages_survive_a_crash_for_offline_subscribers() {
    for v in [V3_1_1, V5] {
        let mut sim = sim();
        let s1 = sim.connect(v, "s1", false);
        sim.subscribe(s1, "t/#", QoS::AtLeastOnce);
        let s2 = sim.connect(v, "s2", false);
        sim.subscribe(s2, "t/#", QoS::ExactlyOnce);
        sim.cut(s1);
        sim.cut(s2);
        let p = sim.connect(v, "p", true);
        for (i, qos) in [QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::AtLeastOnce]
            .into_iter()
            .enumerate()
        {
            sim.publish(p, "t/x", &format!("m{i}"), qos, false);
        }
        sim.publish(p, "t/r", "kept", QoS::AtLeastOnce, true);
        assert_eq!(acks(&sim, p), 4, "{v}: acknowledged once durable");
        sim.crash();
        let s1 = sim.resume(s1, v, "s1");
        let s2 = sim.resume(s2, v, "s2");
        assert!(sim.connack(s1).unwrap().session_present);
        assert_eq!(sim.payloads(s1), ["m0", "m1", "m2", "kept"], "{v}");
        assert_eq!(sim.payloads(s2), ["m0", "m1", "m2", "kept"], "{v}");
        assert_eq!(
            sim.messages(s2).iter().map(|m| m.qos).collect::<Vec<_>>(),
            [
                QoS::AtLeastOnce,
                QoS::ExactlyOnce,
                QoS::AtLeastOnce,
                QoS::AtLeastOnce
            ]
        );
        // Subscriptions and the retained message came back too.
        let p = sim.connect(v, "p2", true);
        sim.publish(p, "t/y", "after", QoS::AtLeastOnce, false);
        assert_eq!(sim.payloads(s1).last().unwrap(), "after");
        let late = sim.connect(v, "late", true);
        sim.subscribe(late, "t/r", QoS::AtLeastOnce);
        assert_eq!(sim.payloads(late), ["kept"]);
        // Everything was acknowledged: the store holds no message.
        assert_eq!(sim.store.bodies(), 0, "{v}");
        assert!(sim
            .store
            .snapshot()
            .sessions
            .values()
            .all(|s| s.messages.is_empty()));
    }
}

#[test]
fn no_acknowledgement_before_the_store_has_it() {
    let mut sim = sim();
    let s = sim.connect(V5, "s", false);
    sim.subscribe(s, "t", QoS::AtLeastOnce);
    sim.cut(s);
    sim.auto_flush = false;
    let p = sim.connect(V5, "p", false);
    sim.publish(p, "t", "m", QoS::AtLeastOnce, false);
    assert_eq!(acks(&sim, p), 0, "PUBACK waits for the store");
    // The broker dies before the records are durable: the publisher, never acknowledged,
    // sends the message again to the restarted broker.
    sim.crash();
    sim.auto_flush = true;
    let p2 = sim.resume(p, V5, "p");
    // The publisher's session was not durable yet either: Session Present 0 makes the
    // client hand its message back, and it publishes it again.
    let again: Vec<Publish> = sim.clients[&p2]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Dropped { publish, .. } => Some((**publish).clone()),
            _ => None,
        })
        .collect();
    assert_eq!(again.len(), 1);
    sim.publish_msg(p2, {
        let mut m = again[0].clone();
        m.packet_id = None;
        m
    });
    assert_eq!(acks(&sim, p2), 1);
    let s = sim.resume(s, V5, "s");
    assert_eq!(sim.payloads(s), ["m"]);
}

#[test]
fn qos2_released_before_the_crash_gets_pubrel_not_the_publish_again() {
    // Section 4.3.3: once PUBREL is sent the PUBLISH is not sent again; after a restart
    // the broker resends PUBREL ([MQTT-4.4.0-1]) and the client answers PUBCOMP.
    let mut sim = sim();
    let s = sim.connect(V5, "s", false);
    sim.subscribe(s, "t", QoS::ExactlyOnce);
    let p = sim.connect(V5, "p", true);
    // The subscriber's PUBCOMP is lost with the broker.
    sim.publish(p, "t", "once", QoS::ExactlyOnce, false);
    assert_eq!(sim.payloads(s), ["once"]);
    let received = records(&sim)
        .iter()
        .any(|r| matches!(r, Record::Received { .. }));
    assert!(received);
    // Undo the completion in the store: the broker died before PUBCOMP arrived.
    let mut store = MemoryStore::new();
    for r in records(&sim) {
        if !matches!(r, Record::Delivered { .. }) {
            store.apply(&r);
        }
    }
    sim.store = store;
    sim.crash();
    sim.clear();
    let s2 = sim.resume(s, V5, "s");
    assert_eq!(
        sim.payloads(s2),
        Vec::<String>::new(),
        "not delivered twice"
    );
    let delivered = records(&sim)
        .iter()
        .any(|r| matches!(r, Record::Delivered { .. }));
    assert!(delivered, "the PUBCOMP completes it");
    assert_eq!(sim.store.bodies(), 0);
}

#[test]
fn qos2_in_flight_at_the_crash_keeps_its_packet_id() {
    // [MQTT-4.4.0-1]: resent with its original packet identifier, so the client, which
    // holds that id until PUBREL, does not deliver it twice ([MQTT-4.3.3-2]-style).
    let mut sim = sim();
    let s = sim.connect_with(
        {
            let mut c = Connect::new(V5, MqttString::new("s").unwrap());
            c.clean_start = false;
            c.properties.session_expiry_interval = Some(3600);
            c
        },
        mqtt_session::Config {
            manual_acks: true,
            ..Default::default()
        },
    );
    sim.subscribe(s, "t", QoS::ExactlyOnce);
    let p = sim.connect(V5, "p", true);
    // Two messages first, acknowledged, so the next one's packet id is not the first a
    // fresh session would pick.
    for m in ["w1", "w2", "once"] {
        sim.publish(p, "t", m, QoS::ExactlyOnce, false);
    }
    let first = sim.messages(s);
    assert_eq!(first.len(), 3);
    let now = sim.now;
    for m in &first[..2] {
        let c = &mut sim.clients.get_mut(&s).unwrap().conn;
        c.ack(now, m.packet_id.unwrap(), ReasonCode::Success)
            .unwrap();
    }
    sim.run();
    // The client has not answered the last PUBREC yet (manual acks) when the broker
    // dies.
    sim.crash();
    let s2 = sim.resume(s, V5, "s");
    assert_eq!(
        sim.messages(s2),
        [],
        "the resend is a duplicate, not delivered"
    );
    // The resumed client (automatic acknowledgements now) completes the exchange.
    assert_eq!(sim.clients[&s2].conn.packet_ids_in_use(), 0);
    assert_eq!(sim.store.bodies(), 0);
    assert!(sim.store.snapshot().sessions["s"].messages.is_empty());
}

#[test]
fn publisher_qos2_resend_after_a_crash_is_not_routed_twice() {
    // [MQTT-4.3.3-2]-style on the receiving side: the broker kept the packet id durable
    // before its PUBREC, so the publisher's resend is a duplicate.
    let mut sim = sim();
    let s = sim.connect(V5, "s", false);
    sim.subscribe(s, "t", QoS::ExactlyOnce);
    sim.auto_flush = false;
    let p = sim.connect(V5, "p", false);
    sim.flush_store();
    sim.run();
    sim.publish(p, "t", "once", QoS::ExactlyOnce, false);
    assert_eq!(sim.payloads(s), ["once"]);
    // Durable, PUBREC answered inside the broker, but the broker dies before writing it.
    sim.flush_store();
    sim.crash();
    sim.auto_flush = true;
    sim.clear();
    let p2 = sim.resume(p, V5, "p");
    let s2 = sim.resume(s, V5, "s");
    assert_eq!(sim.payloads(s2), Vec::<String>::new(), "routed once");
    // The publisher's exchange completes.
    assert_eq!(acks(&sim, p2), 1);
    let snap = sim.store.snapshot();
    assert!(snap.sessions["p"].incoming_qos2.is_empty(), "released");
}

#[test]
fn queue_overflow_and_expiry_leave_nothing_behind_in_the_store() {
    let mut sim = Sim::new(BrokerConfig {
        persistence: true,
        sys_interval: None,
        max_offline_messages: 2,
        drop_policy: DropPolicy::DropOldest,
        ..Default::default()
    });
    let s = sim.connect(V5, "s", false);
    sim.subscribe(s, "t", QoS::AtLeastOnce);
    sim.cut(s);
    let p = sim.connect(V5, "p", true);
    for i in 0..4 {
        sim.publish(p, "t", &format!("m{i}"), QoS::AtLeastOnce, false);
    }
    let mut m = Publish::new(topic("t"), "short-lived");
    m.qos = QoS::AtLeastOnce;
    m.properties.message_expiry_interval = Some(5);
    sim.publish_msg(p, m);
    assert_eq!(sim.store.snapshot().sessions["s"].messages.len(), 2);
    assert_eq!(sim.store.bodies(), 2);
    sim.advance(Duration::from_secs(10));
    let s = sim.resume(s, V5, "s");
    assert_eq!(sim.payloads(s), ["m3"]);
    assert_eq!(sim.store.bodies(), 0);
    assert!(sim.store.snapshot().sessions["s"].messages.is_empty());
}

#[test]
fn shared_subscription_redelivery_moves_the_stored_copy() {
    let mut sim = sim();
    let a = sim.connect_with(
        {
            let mut c = Connect::new(V5, MqttString::new("a").unwrap());
            c.clean_start = false;
            c.properties.session_expiry_interval = Some(3600);
            c
        },
        mqtt_session::Config {
            manual_acks: true,
            ..Default::default()
        },
    );
    let b = sim.connect(V5, "b", false);
    sim.subscribe(a, "$share/g/t", QoS::AtLeastOnce);
    sim.subscribe(b, "$share/g/t", QoS::AtLeastOnce);
    let p = sim.connect(V5, "p", true);
    sim.publish(p, "t", "x", QoS::AtLeastOnce, false);
    sim.publish(p, "t", "y", QoS::AtLeastOnce, false);
    // "a" holds one unacknowledged message and leaves: it goes to "b".
    let held = sim.payloads(a);
    assert_eq!(held.len(), 1);
    sim.cut(a);
    let mut got = sim.payloads(b);
    got.sort();
    assert_eq!(got, ["x", "y"]);
    let snap = sim.store.snapshot();
    assert!(snap.sessions["a"].messages.is_empty());
    assert!(snap.sessions["b"].messages.is_empty());
    assert_eq!(sim.store.bodies(), 0);
}

#[test]
fn a_restored_session_keeps_its_assigned_client_id_to_itself() {
    // 5.0 [MQTT-3.2.2-16]: an assigned client id is unique.
    let mut sim = sim();
    let mut c = Connect::new(V5, MqttString::new("").unwrap());
    c.properties.session_expiry_interval = Some(3600);
    let first = sim.connect_with(c.clone(), Default::default());
    let id1 = sim
        .connack(first)
        .unwrap()
        .properties
        .assigned_client_identifier
        .unwrap();
    sim.crash();
    let second = sim.connect_with(c, Default::default());
    let id2 = sim
        .connack(second)
        .unwrap()
        .properties
        .assigned_client_identifier
        .unwrap();
    assert_ne!(id1, id2);
    assert!(!sim.connack(second).unwrap().session_present);
}

#[test]
fn after_a_crash_only_copies_that_may_have_been_sent_are_marked_dup() {
    // [MQTT-3.3.1-1]: DUP=1 marks an attempt to deliver again. Of the copies a stored
    // session held with packet ids, only those the inflight window (of 2 here) could hold
    // may have been sent; those queued behind it go out first after the crash, DUP=0.
    let config = BrokerConfig {
        persistence: true,
        sys_interval: None,
        session: mqtt_session::Config {
            max_inflight: 2,
            ..BrokerConfig::default().session
        },
        ..Default::default()
    };
    let mut sim = Sim::new(config);
    for v in [V3_1_1, V5] {
        let client_id = format!("s{v}");
        let mut c = Connect::new(v, MqttString::new(&client_id).unwrap());
        c.clean_start = false;
        if v == V5 {
            c.properties.session_expiry_interval = Some(3600);
        }
        // It never acknowledges: two copies stay in flight, three wait behind them.
        let manual = mqtt_session::Config {
            manual_acks: true,
            ..Default::default()
        };
        let s = sim.connect_with(c, manual);
        sim.subscribe(s, "t", QoS::AtLeastOnce);
        let p = sim.connect(v, &format!("p{v}"), true);
        for i in 0..5 {
            sim.publish(p, "t", &format!("m{i}"), QoS::AtLeastOnce, false);
        }
        assert_eq!(sim.messages(s).len(), 2, "{v}");
        sim.crash();
        let from = sim.outputs.len();
        let s2 = sim.resume(s, v, &client_id);
        let mut decoder = Decoder::client(v);
        let mut sent = vec![];
        for o in &sim.outputs[from..] {
            if let Output::Transmit(id, b) = o {
                if *id == s2 {
                    let mut buf = bytes::BytesMut::from(&b[..]);
                    while let Some(packet) = decoder.decode(&mut buf).unwrap() {
                        if let Packet::Publish(m) = packet {
                            sent.push((String::from_utf8(m.payload.to_vec()).unwrap(), m.dup));
                        }
                    }
                }
            }
        }
        let expected: Vec<(String, bool)> = (0..5).map(|i| (format!("m{i}"), i < 2)).collect();
        assert_eq!(sent, expected, "{v}");
    }
}

#[test]
fn a_session_expiry_counts_the_time_the_broker_was_down() {
    // 5.0 section 3.1.2.11.2: a session ends its Session Expiry Interval after the network
    // connection closed. A store with a clock tells the restore how long ago that was
    // (`offline_for`; the memory store has none): here 100 s of expiry, the broker down
    // for `down` seconds, the client back 60 s after the restart.
    for (down, present) in [
        (0, true),
        (30, true),
        (50, false),
        (100, false),
        (150, false),
    ] {
        let mut sim = sim();
        let mut c = Connect::new(V5, MqttString::new("s").unwrap());
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(100);
        let s = sim.connect_with(c, Default::default());
        sim.subscribe(s, "t", QoS::AtLeastOnce);
        sim.cut(s);
        let offline = records(&sim)
            .iter()
            .filter(|r| matches!(r, Record::SessionOffline { .. }))
            .count();
        assert_eq!(offline, 1);
        let mut snapshot = sim.store.snapshot();
        let stored = snapshot.sessions.get_mut("s").unwrap();
        assert_eq!(stored.offline_for, None, "the memory store has no clock");
        stored.offline_for = Some(Duration::from_secs(down));
        sim.broker = Broker::new(sim.config.clone(), sim.now);
        sim.broker.restore(sim.now, snapshot);
        sim.run();
        sim.advance(Duration::from_secs(60));
        let s2 = sim.resume(s, V5, "s");
        assert_eq!(
            sim.connack(s2).unwrap().session_present,
            present,
            "down {down} s"
        );
        if present {
            assert!(records(&sim)
                .iter()
                .any(|r| matches!(r, Record::SessionOnline { .. })));
        }
    }
}
