//! Whole-broker behaviour in memory with simulated time: clients of every version, each
//! a real mqtt-session client connection.

mod common;

use common::*;
use mqtt_broker::*;
use mqtt_proto::*;
use mqtt_session::{CloseReason, Event};
use std::time::Duration;
use ProtocolVersion::{V3_1, V3_1_1, V5};

#[test]
fn publish_subscribe_across_versions_with_qos_downgrade() {
    // [MQTT-3.8.4-1] SUBACK answers SUBSCRIBE; delivered QoS is the minimum of the
    // publish and the granted QoS.
    let mut sim = Sim::default();
    let s31 = sim.connect(V3_1, "s31", true);
    let s311 = sim.connect(V3_1_1, "s311", true);
    let s5 = sim.connect(V5, "s5", true);
    assert_eq!(
        sim.subscribe(s31, "a/#", QoS::ExactlyOnce),
        [ReasonCode::GrantedQoS2]
    );
    sim.subscribe(s311, "a/+", QoS::AtLeastOnce);
    sim.subscribe(s5, "a/b", QoS::AtMostOnce);
    let p = sim.connect(V3_1_1, "pub", true);
    sim.publish(p, "a/b", "m", QoS::ExactlyOnce, false);
    // Delivered QoS = min(publish QoS, granted QoS).
    assert_eq!(sim.messages(s31)[0].qos, QoS::ExactlyOnce);
    assert_eq!(sim.messages(s311)[0].qos, QoS::AtLeastOnce);
    assert_eq!(sim.messages(s5)[0].qos, QoS::AtMostOnce);
    for id in [s31, s311, s5] {
        assert_eq!(sim.payloads(id), ["m"]);
        assert!(!sim.messages(id)[0].retain);
    }
    assert_eq!(sim.broker.stats().messages_received, 1);
    assert_eq!(sim.broker.stats().messages_sent, 3);
}

#[test]
fn dollar_topics_and_wildcards() {
    // [MQTT-4.7.2-1]: '#' and '+' at the first level do not match '$' topics.
    let mut sim = Sim::default();
    let all = sim.connect(V5, "all", true);
    let sys = sim.connect(V5, "sys", true);
    sim.subscribe(all, "#", QoS::AtMostOnce);
    sim.subscribe(sys, "$SYS/#", QoS::AtMostOnce);
    sim.broker.publish(sim.now, {
        let mut p = Publish::new(topic("$SYS/x"), "s");
        p.qos = QoS::AtMostOnce;
        p
    });
    sim.run();
    let p = sim.connect(V5, "pub", true);
    sim.publish(p, "x/y", "n", QoS::AtMostOnce, false);
    assert_eq!(sim.payloads(all), ["n"]);
    assert_eq!(sim.payloads(sys), ["s"]);
}

#[test]
fn overlapping_subscriptions_give_one_copy_with_every_identifier() {
    // 3.1.1 [MQTT-3.3.5-1]: overlapping subscriptions deliver at the highest QoS.
    let mut sim = Sim::default();
    let s = sim.connect(V5, "s", true);
    let o = |q| SubscriptionOptions {
        qos: q,
        ..Default::default()
    };
    sim.subscribe_with(s, "a/+", o(QoS::AtLeastOnce), Some(1));
    sim.subscribe_with(s, "a/#", o(QoS::ExactlyOnce), Some(2));
    sim.subscribe_with(s, "a/b", o(QoS::AtMostOnce), None);
    let p = sim.connect(V5, "p", true);
    sim.publish(p, "a/b", "x", QoS::ExactlyOnce, false);
    let m = sim.messages(s);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].qos, QoS::ExactlyOnce);
    let mut ids: Vec<u32> = m[0]
        .properties
        .subscription_identifiers
        .iter()
        .map(|i| i.get())
        .collect();
    ids.sort();
    assert_eq!(ids, [1, 2]);
}

#[test]
fn no_local_and_retain_as_published() {
    // 5.0 [MQTT-3.8.3-3]: No Local; 5.0 [MQTT-3.3.1-12], 5.0 [MQTT-3.3.1-13]: RETAIN on
    // forward by Retain As Published.
    let mut sim = Sim::default();
    let me = sim.connect(V5, "me", true);
    let other = sim.connect(V5, "other", true);
    sim.subscribe_with(
        me,
        "t",
        SubscriptionOptions {
            no_local: true,
            ..Default::default()
        },
        None,
    );
    sim.subscribe_with(
        other,
        "t",
        SubscriptionOptions {
            retain_as_published: true,
            ..Default::default()
        },
        None,
    );
    sim.publish(me, "t", "r", QoS::AtMostOnce, true);
    assert!(sim.messages(me).is_empty());
    assert!(sim.messages(other)[0].retain);
    sim.publish(other, "t", "x", QoS::AtMostOnce, false);
    assert_eq!(sim.payloads(me), ["x"]);
}

#[test]
fn retained_messages() {
    // Stored per topic and replaced (5.0 [MQTT-3.3.1-5], 3.1.1 [MQTT-3.3.1-5]), cleared by
    // an empty payload and not stored (5.0 [MQTT-3.3.1-6], 5.0 [MQTT-3.3.1-7],
    // 3.1.1 [MQTT-3.3.1-10], 3.1.1 [MQTT-3.3.1-11]), sent on subscribe
    // (3.1.1 [MQTT-3.3.1-6], 5.0 [MQTT-3.3.1-9]) with RETAIN=1 (3.1.1 [MQTT-3.3.1-8]); a
    // live message to an existing subscription has RETAIN=0 (3.1.1 [MQTT-3.3.1-9]).
    let mut sim = Sim::default();
    let p = sim.connect(V3_1_1, "p", true);
    sim.publish(p, "r/a", "1", QoS::AtLeastOnce, true);
    sim.publish(p, "r/a", "2", QoS::AtLeastOnce, true);
    sim.publish(p, "r/b", "b", QoS::AtMostOnce, true);
    assert_eq!(sim.broker.retained().len(), 2);
    let s = sim.connect(V3_1_1, "s", true);
    sim.subscribe(s, "r/#", QoS::AtLeastOnce);
    let m = sim.messages(s);
    assert_eq!(sim.payloads(s), ["2", "b"]);
    assert!(m.iter().all(|m| m.retain));
    assert_eq!(m[1].qos, QoS::AtMostOnce);
    sim.publish(p, "r/a", "3", QoS::AtMostOnce, true);
    assert!(!sim.messages(s)[2].retain);
    sim.publish(p, "r/a", "", QoS::AtMostOnce, true);
    assert_eq!(sim.broker.retained().len(), 1);
    let s2 = sim.connect(V3_1_1, "s2", true);
    sim.subscribe(s2, "r/#", QoS::AtLeastOnce);
    assert_eq!(sim.payloads(s2), ["b"]);
}

#[test]
fn retain_handling_options() {
    // 5.0 [MQTT-3.3.1-9], 5.0 [MQTT-3.3.1-10], 5.0 [MQTT-3.3.1-11]: Retain Handling 0, 1, 2.
    let mut sim = Sim::default();
    let p = sim.connect(V5, "p", true);
    sim.publish(p, "t", "r", QoS::AtMostOnce, true);
    let s = sim.connect(V5, "s", true);
    let o = |rh| SubscriptionOptions {
        retain_handling: rh,
        ..Default::default()
    };
    sim.subscribe_with(s, "t", o(RetainHandling::DoNotSend), None);
    assert!(sim.messages(s).is_empty());
    sim.subscribe_with(s, "t", o(RetainHandling::SendIfNew), None);
    assert!(sim.messages(s).is_empty(), "the subscription existed");
    sim.subscribe_with(s, "t/#", o(RetainHandling::SendIfNew), None);
    assert_eq!(sim.payloads(s), ["r"]);
    sim.subscribe_with(s, "t", o(RetainHandling::SendAtSubscribe), None);
    assert_eq!(sim.payloads(s), ["r", "r"]);
}

#[test]
fn retained_message_expiry() {
    // [MQTT-3.3.2-5]: an expired message is not delivered; the interval counts down.
    let mut sim = Sim::default();
    let p = sim.connect(V5, "p", true);
    let mut m = Publish::new(topic("t"), "e");
    m.retain = true;
    m.properties.message_expiry_interval = Some(10);
    sim.publish_msg(p, m);
    sim.advance(Duration::from_secs(4));
    let s = sim.connect(V5, "s", true);
    sim.subscribe(s, "t", QoS::AtMostOnce);
    assert_eq!(
        sim.messages(s)[0].properties.message_expiry_interval,
        Some(6)
    );
    sim.advance(Duration::from_secs(7));
    let s2 = sim.connect(V5, "s2", true);
    sim.subscribe(s2, "t", QoS::AtMostOnce);
    assert!(sim.messages(s2).is_empty());
}

#[test]
fn persistent_session_queues_while_offline() {
    for v in [V3_1_1, V5] {
        let mut sim = Sim::default();
        let s = sim.connect(v, "s", false);
        sim.subscribe(s, "t", QoS::AtLeastOnce);
        sim.cut(s);
        let p = sim.connect(v, "p", true);
        for i in 0..3 {
            sim.publish(p, "t", &i.to_string(), QoS::AtLeastOnce, false);
        }
        sim.publish(p, "t", "q0", QoS::AtMostOnce, false);
        assert_eq!(
            sim.broker
                .sessions()
                .iter()
                .find(|x| x.client_id == "s")
                .unwrap()
                .queued,
            3
        );
        let s = sim.connect(v, "s", false);
        assert!(sim.connack(s).unwrap().session_present);
        assert_eq!(
            sim.payloads(s),
            ["0", "1", "2"],
            "{v}: QoS 0 is not queued offline"
        );
        assert_eq!(sim.broker.stats().qos0_offline_skipped, 1);
    }
}

#[test]
fn durations_too_long_for_an_instant_never_come() {
    // A 3.x session kept "forever", $SYS "never", no connect timeout: deadlines past the
    // range of an Instant are not armed (adding them would overflow and panic).
    let mut config = BrokerConfig {
        persistent_session_expiry: Duration::MAX,
        max_session_expiry: Duration::MAX,
        sys_interval: Some(Duration::MAX),
        ..BrokerConfig::default()
    };
    config.session.connect_timeout = Duration::MAX;
    let mut sim = Sim::new(config);
    let s = sim.connect(V3_1_1, "s3", false);
    sim.subscribe(s, "t", QoS::AtLeastOnce);
    sim.cut(s);
    sim.advance(Duration::from_secs(1000 * 86_400));
    let sessions = sim.broker.sessions();
    assert_eq!(sessions.len(), 1);
    assert!(!sessions[0].online);
    let s = sim.connect(V3_1_1, "s3", false);
    assert!(sim.connack(s).unwrap().session_present);
    let conn = mqtt_session::Connection::server(
        mqtt_session::Config {
            connect_timeout: Duration::MAX,
            ..Default::default()
        },
        sim.now,
    );
    assert_eq!(conn.poll_timeout(), None);
}

#[test]
fn clean_session_discards_state() {
    // 3.1.1 [MQTT-3.1.2-6], 5.0 [MQTT-3.1.2-4]: Clean Session / Clean Start 1 discards the
    // previous session.
    let mut sim = Sim::default();
    let s = sim.connect(V3_1_1, "s", false);
    sim.subscribe(s, "t", QoS::AtLeastOnce);
    sim.cut(s);
    let s = sim.connect(V3_1_1, "s", true);
    assert!(!sim.connack(s).unwrap().session_present);
    assert!(sim.broker.subscriptions().is_empty());
    let p = sim.connect(V3_1_1, "p", true);
    sim.publish(p, "t", "x", QoS::AtLeastOnce, false);
    assert!(sim.messages(s).is_empty());
}

#[test]
fn offline_queue_overflow_is_counted_by_policy() {
    for (policy, expect) in [
        (DropPolicy::DropNewest, ["0", "1"]),
        (DropPolicy::DropOldest, ["3", "4"]),
    ] {
        let mut sim = Sim::new(BrokerConfig {
            max_offline_messages: 2,
            drop_policy: policy,
            sys_interval: None,
            ..Default::default()
        });
        let s = sim.connect(V5, "s", false);
        sim.subscribe(s, "t", QoS::AtLeastOnce);
        sim.cut(s);
        let p = sim.connect(V5, "p", true);
        for i in 0..5 {
            sim.publish(p, "t", &i.to_string(), QoS::AtLeastOnce, false);
        }
        assert_eq!(sim.broker.stats().dropped_queue_full, 3);
        assert_eq!(sim.drop_events(Drop::QueueFull), 3);
        let s = sim.connect(V5, "s", false);
        assert_eq!(sim.payloads(s), expect, "{policy:?}");
    }
}

#[test]
fn queued_message_expiry() {
    let mut sim = Sim::default();
    let s = sim.connect(V5, "s", false);
    sim.subscribe(s, "t", QoS::AtLeastOnce);
    sim.cut(s);
    let p = sim.connect(V5, "p", true);
    let mut m = Publish::new(topic("t"), "short");
    m.qos = QoS::AtLeastOnce;
    m.properties.message_expiry_interval = Some(5);
    sim.publish_msg(p, m);
    sim.publish(p, "t", "long", QoS::AtLeastOnce, false);
    sim.advance(Duration::from_secs(6));
    let s = sim.connect(V5, "s", false);
    assert_eq!(sim.payloads(s), ["long"]);
    assert_eq!(sim.broker.stats().dropped_expired, 1);
}

#[test]
fn takeover_closes_the_old_connection_and_resumes() {
    // 5.0 [MQTT-3.1.4-3], 3.1.1 [MQTT-3.1.4-2]: the existing connection is closed; 5.0
    // DISCONNECT 0x8E.
    let mut sim = Sim::default();
    let old = sim.connect(V5, "c", false);
    sim.subscribe(old, "t", QoS::AtLeastOnce);
    let new = sim.connect(V5, "c", false);
    assert!(matches!(
        sim.closed(old),
        Some(CloseReason::Disconnected {
            reason_code: ReasonCode::SessionTakenOver,
            ..
        })
    ));
    assert!(sim.connack(new).unwrap().session_present);
    let p = sim.connect(V5, "p", true);
    sim.publish(p, "t", "x", QoS::AtLeastOnce, false);
    assert_eq!(sim.payloads(new), ["x"]);
    assert_eq!(sim.broker.clients().len(), 2);
}

#[test]
fn takeover_during_inflight_qos2_delivers_exactly_once() {
    let mut sim = Sim::default();
    let old = sim.connect(V5, "c", false);
    sim.subscribe(old, "t", QoS::ExactlyOnce);
    // The subscriber's transport stops delivering: the broker's PUBLISH stays inflight.
    sim.clients.get_mut(&old).unwrap().transport_open = false;
    let p = sim.connect(V5, "p", true);
    sim.publish(p, "t", "once", QoS::ExactlyOnce, false);
    assert!(sim.messages(old).is_empty());
    let new = sim.connect(V5, "c", false);
    sim.run();
    assert_eq!(sim.payloads(new), ["once"]);
    let m = &sim.messages(new)[0];
    assert!(m.dup, "resent with DUP=1");
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.payloads(new), ["once"]);
}

#[test]
fn session_expiry() {
    let mut sim = Sim::default();
    let mut c = Connect::new(V5, MqttString::new("e").unwrap());
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(30);
    let s = sim.connect_with(c.clone(), Default::default());
    sim.subscribe(s, "t", QoS::AtLeastOnce);
    sim.cut(s);
    sim.advance(Duration::from_secs(29));
    assert_eq!(sim.broker.sessions().len(), 1);
    sim.advance(Duration::from_secs(1));
    assert!(sim.broker.sessions().is_empty());
    assert!(sim.broker.subscriptions().is_empty());
    let s = sim.connect_with(c, Default::default());
    assert!(!sim.connack(s).unwrap().session_present);
    // 3.1.1 persistent sessions expire after the configured time.
    let mut sim = Sim::new(BrokerConfig {
        persistent_session_expiry: Duration::from_secs(100),
        sys_interval: None,
        ..Default::default()
    });
    let s = sim.connect(V3_1_1, "old", false);
    sim.cut(s);
    sim.advance(Duration::from_secs(100));
    assert!(sim.broker.sessions().is_empty());
}

/// Sends DISCONNECT with a Session Expiry Interval, then closes the transport.
fn disconnect_with_expiry(sim: &mut Sim, id: ConnId, expiry: u32) {
    let now = sim.now;
    let props = DisconnectProperties {
        session_expiry_interval: Some(expiry),
        ..Default::default()
    };
    let c = sim.clients.get_mut(&id).unwrap();
    c.conn.disconnect(now, ReasonCode::Success, props).unwrap();
    sim.run();
    sim.clients.get_mut(&id).unwrap().transport_open = false;
    sim.broker.handle_closed(sim.now, id);
    sim.run();
}

#[test]
fn disconnect_changes_the_session_expiry() {
    // 5.0: the Session Expiry Interval of DISCONNECT replaces the one of CONNECT (3.14.2.2.2)
    // when CONNECT's was not 0 ([MQTT-3.14.2-2]); 0 ends the session with the connection.
    let mut sim = Sim::default();
    let mut c = Connect::new(V5, MqttString::new("e").unwrap());
    c.properties.session_expiry_interval = Some(1);
    let s = sim.connect_with(c.clone(), Default::default());
    sim.subscribe(s, "t", QoS::AtLeastOnce);
    disconnect_with_expiry(&mut sim, s, 5);
    sim.advance(Duration::from_secs(3));
    c.clean_start = false;
    let s = sim.connect_with(c.clone(), Default::default());
    assert!(
        sim.connack(s).unwrap().session_present,
        "kept for 5 s, not 1"
    );
    disconnect_with_expiry(&mut sim, s, 0);
    assert!(sim.broker.sessions().is_empty(), "0: ended at once");
    let s = sim.connect_with(c, Default::default());
    assert!(!sim.connack(s).unwrap().session_present);
}

#[test]
fn will_is_sent_when_the_session_ends_before_its_delay() {
    // 5.0 (3.1.3.2.2): the will waits for the Will Delay Interval or the end of the
    // session, whichever comes first.
    for (expiry, sent_after) in [(2, 2), (0, 0), (5, 3)] {
        let mut sim = Sim::default();
        let w = sim.connect(V5, "watcher", true);
        sim.subscribe(w, "will", QoS::AtLeastOnce);
        let mut c = Connect::new(V5, MqttString::new("c").unwrap());
        c.properties.session_expiry_interval = Some(expiry);
        let mut will = Will {
            topic: topic("will"),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        };
        will.properties.will_delay_interval = Some(if expiry == 5 { 3 } else { 5 });
        c.will = Some(Box::new(will));
        let id = sim.connect_with(c, Default::default());
        sim.cut(id);
        if sent_after > 0 {
            sim.advance(Duration::from_secs(sent_after - 1));
            assert!(sim.messages(w).is_empty(), "expiry {expiry}: not yet");
            sim.advance(Duration::from_secs(1));
        }
        assert_eq!(sim.payloads(w), ["gone"], "expiry {expiry}");
    }
}

#[test]
fn empty_client_id_is_assigned() {
    // 5.0 [MQTT-3.1.3-7]: the assigned id is returned in CONNACK.
    let mut sim = Sim::default();
    let c = Connect::new(V5, MqttString::empty());
    let id = sim.connect_with(c, Default::default());
    let ack = sim.connack(id).unwrap();
    let assigned = ack.properties.assigned_client_identifier.unwrap();
    assert!(!assigned.is_empty());
    assert_eq!(sim.broker.clients()[0].client_id, assigned);
    // 3.1.1 with Clean Session 1: accepted (3.1.1 [MQTT-3.1.3-6]).
    let c = Connect::new(V3_1_1, MqttString::empty());
    let id = sim.connect_with(c, Default::default());
    assert!(sim.connack(id).is_some());
}

fn connect_with_will(
    sim: &mut Sim,
    v: ProtocolVersion,
    id: &str,
    delay: Option<u32>,
    clean: bool,
) -> ConnId {
    let mut c = Connect::new(v, MqttString::new(id).unwrap());
    c.clean_start = clean;
    if v.is_v5() && !clean {
        c.properties.session_expiry_interval = Some(3600);
    }
    let mut will = Will {
        topic: topic("will"),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    will.properties.will_delay_interval = delay;
    c.will = Some(Box::new(will));
    sim.connect_with(c, Default::default())
}

#[test]
fn will_on_abnormal_close_not_on_disconnect() {
    for v in [V3_1, V3_1_1, V5] {
        let mut sim = Sim::default();
        let w = sim.connect(v, "watcher", true);
        sim.subscribe(w, "will", QoS::AtLeastOnce);
        let c = connect_with_will(&mut sim, v, "c", None, true);
        sim.disconnect(c, ReasonCode::Success);
        assert!(
            sim.messages(w).is_empty(),
            "{v}: normal DISCONNECT discards the will"
        );
        let c = connect_with_will(&mut sim, v, "c", None, true);
        sim.cut(c);
        assert_eq!(
            sim.payloads(w),
            ["gone"],
            "{v}: abnormal close publishes it"
        );
    }
    // 5.0: DISCONNECT 0x04 publishes it.
    let mut sim = Sim::default();
    let w = sim.connect(V5, "watcher", true);
    sim.subscribe(w, "will", QoS::AtLeastOnce);
    let c = connect_with_will(&mut sim, V5, "c", None, true);
    sim.disconnect(c, ReasonCode::DisconnectWithWillMessage);
    assert_eq!(sim.payloads(w), ["gone"]);
}

#[test]
fn will_after_keep_alive_timeout_and_protocol_error() {
    let mut sim = Sim::default();
    let w = sim.connect(V3_1_1, "watcher", true);
    sim.subscribe(w, "will", QoS::AtLeastOnce);
    let mut c = Connect::new(V3_1_1, MqttString::new("c").unwrap());
    c.keep_alive = 10;
    c.will = Some(Box::new(Will {
        topic: topic("will"),
        payload: bytes::Bytes::from_static(b"ka"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    }));
    let id = sim.connect_with(c, Default::default());
    // The client goes silent (its bytes no longer arrive).
    sim.clients.get_mut(&id).unwrap().transport_open = false;
    sim.advance(Duration::from_secs(15));
    assert_eq!(sim.payloads(w), ["ka"]);
    // A protocol error also publishes the will.
    let c = connect_with_will(&mut sim, V3_1_1, "bad", None, true);
    sim.broker.handle_input(sim.now, c, b"\xf0\x00");
    sim.run();
    assert_eq!(sim.payloads(w), ["ka", "gone"]);
}

#[test]
fn will_delay_is_cancelled_by_reconnect() {
    // 5.0 [MQTT-3.1.3-9]: the will waits for the Will Delay Interval and is not sent if
    // the session resumes first.
    let mut sim = Sim::default();
    let w = sim.connect(V5, "watcher", true);
    sim.subscribe(w, "will", QoS::AtLeastOnce);
    let c = connect_with_will(&mut sim, V5, "c", Some(10), false);
    sim.cut(c);
    sim.advance(Duration::from_secs(5));
    connect_with_will(&mut sim, V5, "c", Some(10), false);
    sim.advance(Duration::from_secs(20));
    assert!(sim.messages(w).is_empty());
    // Without a reconnect it is sent after the delay.
    let c = connect_with_will(&mut sim, V5, "d", Some(10), false);
    sim.cut(c);
    sim.advance(Duration::from_secs(9));
    assert!(sim.messages(w).is_empty());
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.payloads(w), ["gone"]);
}

#[test]
fn acl_denies_subscribe_and_publish() {
    let mut sim = Sim::default();
    sim.broker.set_acl(Acl {
        rules: vec![Rule {
            allow: false,
            who: Who::Any,
            access: Access::Both,
            filter: "secret/#".into(),
        }],
        default_allow: true,
    });
    for v in [V3_1_1, V5] {
        let s = sim.connect(v, &format!("s{v}"), true);
        assert_eq!(
            sim.subscribe(s, "secret/x", QoS::AtLeastOnce),
            [ReasonCode::UnspecifiedError]
        );
        assert_eq!(
            sim.subscribe(s, "#", QoS::AtLeastOnce),
            [ReasonCode::GrantedQoS1]
        );
        let p = sim.connect(v, &format!("p{v}"), true);
        sim.publish(p, "secret/x", "no", QoS::AtLeastOnce, false);
        assert!(sim.payloads(s).iter().all(|m| m != "no"));
        let acked = sim.clients[&p].events.iter().find_map(|e| match e {
            Event::Delivered { reason_code, .. } => Some(*reason_code),
            _ => None,
        });
        // 3.1.1 [MQTT-3.3.5-2]: a denied publish is still acknowledged in 3.1.1.
        let expect = if v == V5 {
            ReasonCode::NotAuthorized
        } else {
            ReasonCode::Success
        };
        assert_eq!(acked, Some(expect), "{v}");
    }
    assert_eq!(sim.broker.stats().publish_denied, 2);
}

#[test]
fn acl_wildcard_subscriptions_get_no_denied_topic() {
    // A subscription that no rule denies whole is granted, but what it matches on a topic
    // a rule denies its client is not delivered: live, retained or queued offline.
    let mut sim = Sim::default();
    sim.broker.set_acl(Acl {
        rules: vec![
            Rule {
                allow: false,
                who: Who::Any,
                access: Access::Subscribe,
                filter: "test/nosubscribe".into(),
            },
            Rule {
                allow: false,
                who: Who::User("bob".into()),
                access: Access::Subscribe,
                filter: "team/secret".into(),
            },
        ],
        default_allow: true,
    });
    let p = sim.connect(V5, "p", true);
    sim.publish(p, "test/nosubscribe", "retained no", QoS::AtLeastOnce, true);
    sim.publish(p, "test/open", "retained yes", QoS::AtLeastOnce, true);
    for v in [V3_1_1, V5] {
        for filter in ["test/+", "#"] {
            let s = sim.connect(v, &format!("s{v}{filter}"), true);
            assert_eq!(
                sim.subscribe(s, "test/nosubscribe", QoS::AtLeastOnce),
                [ReasonCode::UnspecifiedError]
            );
            assert_eq!(
                sim.subscribe(s, filter, QoS::AtLeastOnce),
                [ReasonCode::GrantedQoS1],
                "{v} {filter}"
            );
            assert_eq!(sim.payloads(s), ["retained yes"], "{v} {filter}");
            sim.clear();
            sim.publish(p, "test/nosubscribe", "live no", QoS::AtLeastOnce, false);
            sim.publish(p, "test/open", "live yes", QoS::AtLeastOnce, false);
            assert_eq!(sim.payloads(s), ["live yes"], "{v} {filter}");
            sim.disconnect(s, ReasonCode::Success);
        }
    }
    // Per user: the same subscription, one of the two denied a topic.
    let mut team = vec![];
    for user in ["alice", "bob"] {
        let mut c = Connect::new(V5, MqttString::new(user).unwrap());
        c.username = Some(MqttString::new(user).unwrap());
        let id = sim.connect_with(c, Default::default());
        assert_eq!(
            sim.subscribe(id, "team/+", QoS::AtMostOnce),
            [ReasonCode::Success]
        );
        team.push(id);
    }
    sim.clear();
    sim.publish(p, "team/secret", "secret", QoS::AtMostOnce, false);
    sim.publish(p, "team/news", "news", QoS::AtMostOnce, false);
    assert_eq!(sim.payloads(team[0]), ["secret", "news"]);
    assert_eq!(sim.payloads(team[1]), ["news"]);
    // Queued while offline: checked when the client is back.
    let o = sim.connect(V5, "offline", false);
    sim.subscribe(o, "test/+", QoS::AtLeastOnce);
    sim.cut(o);
    sim.clear();
    sim.publish(p, "test/nosubscribe", "queued no", QoS::AtLeastOnce, false);
    sim.publish(p, "test/open", "queued yes", QoS::AtLeastOnce, false);
    let o = sim.resume(o, V5, "offline");
    assert_eq!(sim.payloads(o), ["queued yes"]);
    // Per subscriber of the loop one retained and one live, one for bob, and for the
    // offline session one retained and one queued.
    assert_eq!(sim.broker.stats().receive_denied, 4 * 2 + 1 + 2);
}

#[test]
fn long_and_deep_topics_are_routed_by_default() {
    // Topic names may be up to 65,535 bytes (a UTF-8 string: 3.1.1 section 1.5.3, 5.0
    // section 1.5.4) with any number of levels; the defaults accept 65,535 bytes and 128
    // levels, so a 3.1.1 client, which cannot be told no, does not lose such a message.
    let mut sim = Sim::default();
    let long = format!("long/{}", "x".repeat(60_000));
    let deep = vec!["d"; 128].join("/");
    for v in [V3_1_1, V5] {
        let s = sim.connect(v, &format!("s{v}"), true);
        for t in [&long, &deep] {
            assert_eq!(
                sim.subscribe(s, t, QoS::AtLeastOnce),
                [ReasonCode::GrantedQoS1]
            );
        }
        let p = sim.connect(v, &format!("p{v}"), true);
        sim.publish(p, &long, "long", QoS::AtLeastOnce, false);
        sim.publish(p, &deep, "deep", QoS::AtLeastOnce, false);
        assert_eq!(sim.payloads(s), ["long", "deep"], "{v}");
        // One level more than the default is refused.
        let deeper = format!("{deep}/d");
        let expect = if v == V5 {
            ReasonCode::TopicFilterInvalid
        } else {
            ReasonCode::UnspecifiedError
        };
        assert_eq!(sim.subscribe(s, &deeper, QoS::AtLeastOnce), [expect], "{v}");
    }
}

#[test]
fn clients_cannot_publish_to_sys_topics() {
    // Section 4.7.2: `$` topics are not for clients to exchange messages; `$SYS` is the
    // broker's. A client's publish there is refused like an ACL denial, and so is a will.
    let mut sim = Sim::default();
    for v in [V3_1_1, V5] {
        let s = sim.connect(v, &format!("s{v}"), true);
        sim.subscribe(s, "$SYS/#", QoS::AtLeastOnce);
        let p = sim.connect(v, &format!("p{v}"), true);
        for t in ["$SYS/broker/version", "$SYS"] {
            sim.publish(p, t, "fake", QoS::AtLeastOnce, true);
        }
        assert!(sim.payloads(s).is_empty(), "{v}");
        let acked: Vec<ReasonCode> = sim.clients[&p]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Delivered { reason_code, .. } => Some(*reason_code),
                _ => None,
            })
            .collect();
        let expect = if v == V5 {
            ReasonCode::NotAuthorized
        } else {
            ReasonCode::Success
        };
        assert_eq!(acked, [expect, expect], "{v}");
        let mut c = Connect::new(v, MqttString::new(&format!("w{v}")).unwrap());
        c.will = Some(Box::new(Will {
            topic: topic("$SYS/broker/uptime"),
            payload: "fake".into(),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Default::default(),
        }));
        let w = sim.connect_with(c, Default::default());
        assert_eq!(
            sim.closed(w),
            Some(CloseReason::Refused(ReasonCode::NotAuthorized))
        );
    }
    assert!(sim.broker.retained().is_empty());
    assert_eq!(sim.broker.stats().publish_denied, 4);
    // The broker itself still publishes there.
    let s = sim.connect(V5, "reader", true);
    sim.subscribe(s, "$SYS/#", QoS::AtMostOnce);
    sim.broker
        .publish(sim.now, Publish::new(topic("$SYS/x"), "from the broker"));
    sim.run();
    assert_eq!(sim.payloads(s), ["from the broker"]);
}

#[test]
fn subscribe_denied_code_is_configurable() {
    let mut sim = Sim::new(BrokerConfig {
        subscribe_denied_code: ReasonCode::NotAuthorized,
        sys_interval: None,
        ..Default::default()
    });
    sim.broker.set_acl(Acl {
        rules: vec![Rule {
            allow: false,
            who: Who::Any,
            access: Access::Subscribe,
            filter: "#".into(),
        }],
        default_allow: true,
    });
    let s = sim.connect(V5, "s", true);
    assert_eq!(
        sim.subscribe(s, "a", QoS::AtMostOnce),
        [ReasonCode::NotAuthorized]
    );
    let s = sim.connect(V3_1_1, "s3", true);
    assert_eq!(
        sim.subscribe(s, "a", QoS::AtMostOnce),
        [ReasonCode::UnspecifiedError]
    );
}

#[test]
fn authentication_requests() {
    let mut sim = Sim::new(BrokerConfig {
        authenticate: true,
        allow_anonymous: false,
        sys_interval: None,
        ..Default::default()
    });
    sim.password = Some(b"right".to_vec());
    for (v, code) in [
        (V3_1_1, ReasonCode::BadUserNameOrPassword),
        (V5, ReasonCode::BadUserNameOrPassword),
    ] {
        let mut c = Connect::new(v, MqttString::new("u").unwrap());
        c.username = Some(MqttString::new("ann").unwrap());
        c.password = Some(bytes::Bytes::from_static(b"wrong"));
        let id = sim.connect_with(c.clone(), Default::default());
        assert_eq!(sim.closed(id), Some(CloseReason::Refused(code)), "{v}");
        c.password = Some(bytes::Bytes::from_static(b"right"));
        let id = sim.connect_with(c, Default::default());
        assert!(sim.connack(id).is_some());
        // Anonymous is refused.
        let id = sim.connect(v, "anon", true);
        assert_eq!(
            sim.closed(id),
            Some(CloseReason::Refused(ReasonCode::NotAuthorized))
        );
    }
    assert_eq!(sim.broker.stats().auth_failures, 4);
    // A refused client's disconnection still names it (the adapter's log line): one
    // refused by the authenticator, one refused as anonymous, in each version.
    let refused: Vec<Option<&str>> =
        sim.outputs
            .iter()
            .filter_map(|o| match o {
                Output::Event(BrokerEvent::ClientDisconnected {
                    client_id,
                    reason:
                        CloseReason::Local(
                            ReasonCode::BadUserNameOrPassword | ReasonCode::NotAuthorized,
                        ),
                    ..
                }) => Some(client_id.as_ref().map(|c| c.as_str())),
                _ => None,
            })
            .collect();
    assert_eq!(refused, [Some("u"), Some("anon"), Some("u"), Some("anon")]);
}

#[test]
fn an_authentication_method_nobody_handles_is_refused() {
    // 5.0 [MQTT-4.12.0-1]: a server that does not support the client's Authentication
    // Method refuses the connection (0x8C Bad authentication method) and closes it, even
    // when it lets clients in without credentials.
    let mut sim = Sim::default();
    let mut c = Connect::new(V5, MqttString::new("sasl").unwrap());
    c.properties.authentication_method = Some(MqttString::new("SCRAM-SHA-256").unwrap());
    let id = sim.connect_with(c, Default::default());
    assert_eq!(
        sim.closed(id),
        Some(CloseReason::Refused(ReasonCode::BadAuthenticationMethod))
    );
    assert!(sim.connack(id).is_none());
}

#[test]
fn sys_topics() {
    let mut sim = Sim::new(BrokerConfig {
        sys_interval: Some(Duration::from_secs(10)),
        ..Default::default()
    });
    let s = sim.connect(V5, "s", true);
    sim.subscribe(s, "$SYS/broker/clients/connected", QoS::AtMostOnce);
    sim.subscribe(s, "$SYS/broker/uptime", QoS::AtMostOnce);
    sim.advance(Duration::from_secs(10));
    let got = sim.payloads(s);
    assert!(got.contains(&"1".to_string()), "{got:?}");
    assert!(got.contains(&"10 seconds".to_string()), "{got:?}");
    // Retained: a later subscriber gets the latest at once.
    let s2 = sim.connect(V5, "s2", true);
    sim.subscribe(s2, "$SYS/broker/version", QoS::AtMostOnce);
    assert!(sim.payloads(s2)[0].starts_with("mqtt-broker"));
}

#[test]
fn shared_subscription_round_robin() {
    let mut sim = Sim::default();
    let a = sim.connect(V5, "a", true);
    let b = sim.connect(V5, "b", true);
    let c = sim.connect(V3_1_1, "c", true);
    for id in [a, b, c] {
        sim.subscribe(id, "$share/g/jobs/+", QoS::AtLeastOnce);
    }
    let p = sim.connect(V5, "p", true);
    for i in 0..6 {
        sim.publish(p, "jobs/x", &i.to_string(), QoS::AtLeastOnce, false);
    }
    for id in [a, b, c] {
        assert_eq!(sim.messages(id).len(), 2);
    }
    // A member that leaves gets no more.
    sim.cut(c);
    for i in 0..4 {
        sim.publish(p, "jobs/x", &i.to_string(), QoS::AtLeastOnce, false);
    }
    assert_eq!(sim.messages(a).len() + sim.messages(b).len(), 8);
}

struct TestHooks;

impl Hooks for TestHooks {
    fn validate_connection(&mut self, _info: &ConnInfo, c: &Connect) -> Result<(), ReasonCode> {
        if c.client_id.starts_with("banned") {
            Err(ReasonCode::Banned)
        } else {
            Ok(())
        }
    }
    fn intercept_subscription(&mut self, _client: &str, s: &mut Subscription) -> bool {
        s.filter.as_str() != "forbidden"
    }
    fn intercept_publish(&mut self, _client: &str, p: &mut Publish) -> PublishDecision {
        if p.topic.as_str() == "drop" {
            return PublishDecision::Drop;
        }
        p.payload = bytes::Bytes::from(format!("[{}]", String::from_utf8_lossy(&p.payload)));
        PublishDecision::Accept
    }
}

#[test]
fn hooks_validate_rewrite_and_drop() {
    let mut sim = Sim::default();
    sim.broker.set_hooks(Box::new(TestHooks));
    let b = sim.connect(V5, "banned-1", true);
    assert_eq!(
        sim.closed(b),
        Some(CloseReason::Refused(ReasonCode::Banned))
    );
    let s = sim.connect(V5, "s", true);
    assert_eq!(
        sim.subscribe(s, "forbidden", QoS::AtMostOnce),
        [ReasonCode::UnspecifiedError]
    );
    sim.subscribe(s, "#", QoS::AtMostOnce);
    sim.publish(s, "t", "x", QoS::AtMostOnce, false);
    sim.publish(s, "drop", "y", QoS::AtMostOnce, false);
    assert_eq!(sim.payloads(s), ["[x]"]);
}

#[test]
fn durable_acks_wait_for_the_store() {
    let mut sim = Sim::new(BrokerConfig {
        persistence: true,
        sys_interval: None,
        ..Default::default()
    });
    sim.auto_flush = false;
    let p = sim.connect(V5, "p", true);
    // Nothing durable changes: acknowledged at once.
    sim.publish(p, "t", "x", QoS::AtLeastOnce, false);
    assert_eq!(
        sim.clients[&p]
            .events
            .iter()
            .filter(|e| matches!(e, Event::Delivered { .. }))
            .count(),
        1
    );
    sim.clients.get_mut(&p).unwrap().events.clear();
    // A stored session holds a copy: the PUBACK waits for the store.
    let s = sim.connect(V5, "s", false);
    sim.subscribe(s, "t", QoS::AtLeastOnce);
    sim.publish(p, "t", "x", QoS::AtLeastOnce, false);
    let delivered = |sim: &Sim| {
        sim.clients[&p]
            .events
            .iter()
            .any(|e| matches!(e, Event::Delivered { .. }))
    };
    assert!(!delivered(&sim), "PUBACK waits for the record");
    let seq = sim
        .outputs
        .iter()
        .find_map(|o| match o {
            Output::Store(Record::Sync { seq }) => Some(*seq),
            _ => None,
        })
        .unwrap();
    sim.broker.handle_durable(sim.now, seq);
    sim.run();
    assert!(delivered(&sim));
}

#[test]
fn server_side_publish_disconnect_and_queries() {
    let mut sim = Sim::default();
    let s = sim.connect(V5, "s", true);
    sim.subscribe(s, "news", QoS::AtLeastOnce);
    let mut m = Publish::new(topic("news"), "hello");
    m.qos = QoS::AtLeastOnce;
    assert_eq!(sim.broker.publish(sim.now, m), 1);
    sim.run();
    assert_eq!(sim.payloads(s), ["hello"]);
    assert_eq!(sim.broker.clients().len(), 1);
    assert_eq!(sim.broker.subscriptions()[0].1.filter.as_str(), "news");
    assert!(sim
        .broker
        .disconnect_client(sim.now, "s", ReasonCode::AdministrativeAction));
    sim.run();
    assert!(matches!(
        sim.closed(s),
        Some(CloseReason::Disconnected {
            reason_code: ReasonCode::AdministrativeAction,
            ..
        })
    ));
    assert!(sim.broker.clients().is_empty());
    assert!(!sim
        .broker
        .disconnect_client(sim.now, "nobody", ReasonCode::AdministrativeAction));
}

#[test]
fn subscription_limit() {
    let mut sim = Sim::new(BrokerConfig {
        max_subscriptions: 2,
        sys_interval: None,
        ..Default::default()
    });
    let s = sim.connect(V5, "s", true);
    sim.subscribe(s, "a", QoS::AtMostOnce);
    sim.subscribe(s, "b", QoS::AtMostOnce);
    // [MQTT-3.8.4-3]: an identical filter replaces the existing subscription.
    assert_eq!(
        sim.subscribe(s, "a", QoS::AtLeastOnce),
        [ReasonCode::GrantedQoS1],
        "replacing is fine"
    );
    assert_eq!(
        sim.subscribe(s, "c", QoS::AtMostOnce),
        [ReasonCode::QuotaExceeded]
    );
}

#[test]
fn shutdown_disconnects_everyone() {
    let mut sim = Sim::default();
    let a = sim.connect(V5, "a", true);
    let b = sim.connect(V3_1_1, "b", true);
    sim.broker.shutdown(sim.now);
    sim.run();
    assert!(matches!(
        sim.closed(a),
        Some(CloseReason::Disconnected {
            reason_code: ReasonCode::ServerShuttingDown,
            ..
        })
    ));
    assert_eq!(sim.closed(b), Some(CloseReason::TransportClosed));
    assert!(sim.broker.clients().is_empty());
}

#[test]
fn unsubscribe() {
    // [MQTT-3.10.4-1] filters compared character by character; [MQTT-3.10.4-4] UNSUBACK
    // answers; [MQTT-3.10.4-5] even when nothing was deleted.
    let mut sim = Sim::default();
    let s = sim.connect(V5, "s", true);
    sim.subscribe(s, "t", QoS::AtMostOnce);
    let now = sim.now;
    sim.clients
        .get_mut(&s)
        .unwrap()
        .conn
        .unsubscribe(
            now,
            vec![
                TopicFilter::new("t").unwrap(),
                TopicFilter::new("u").unwrap(),
            ],
            Default::default(),
        )
        .unwrap();
    sim.run();
    let codes = sim.clients[&s].events.iter().find_map(|e| match e {
        Event::UnsubAck(u) => Some(u.reason_codes.clone()),
        _ => None,
    });
    assert_eq!(
        codes,
        Some(vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted])
    );
    let p = sim.connect(V5, "p", true);
    sim.publish(p, "t", "x", QoS::AtMostOnce, false);
    assert!(sim.messages(s).is_empty());
}

#[test]
fn shared_member_leaving_hands_unacknowledged_messages_to_another() {
    let mut sim = Sim::default();
    let a = sim.connect(V5, "a", false);
    let b = sim.connect(V5, "b", false);
    sim.subscribe(a, "$share/g/work", QoS::AtLeastOnce);
    sim.subscribe(b, "$share/g/work", QoS::AtLeastOnce);
    // a stops reading: what it is sent stays unacknowledged.
    sim.clients.get_mut(&a).unwrap().transport_open = false;
    let p = sim.connect(V5, "p", true);
    for i in 0..4 {
        sim.publish(p, "work", &i.to_string(), QoS::AtLeastOnce, false);
    }
    assert_eq!(sim.payloads(b), ["1", "3"]);
    sim.cut(a);
    let mut got = sim.payloads(b);
    got.sort();
    assert_eq!(got, ["0", "1", "2", "3"], "a's two went to b");
    // a comes back: nothing is delivered twice.
    let a = sim.connect(V5, "a", false);
    assert!(sim.messages(a).is_empty());
}

#[test]
fn offline_queues_share_a_memory_budget() {
    let mut sim = Sim::new(BrokerConfig {
        max_total_offline_bytes: 10,
        sys_interval: None,
        ..Default::default()
    });
    let s1 = sim.connect(V5, "s1", false);
    let s2 = sim.connect(V5, "s2", false);
    sim.subscribe(s1, "t", QoS::AtLeastOnce);
    sim.subscribe(s2, "t", QoS::AtLeastOnce);
    sim.cut(s1);
    sim.cut(s2);
    let p = sim.connect(V5, "p", true);
    sim.publish(p, "t", "1234", QoS::AtLeastOnce, false); // 8 bytes queued
    sim.publish(p, "t", "5678", QoS::AtLeastOnce, false); // 2 of 4 copies fit
    assert_eq!(sim.broker.stats().dropped_memory_budget, 2);
    // Delivering a session's queue frees its share of the budget.
    sim.connect(V5, "s1", false);
    sim.publish(p, "t", "ab", QoS::AtLeastOnce, false);
    assert_eq!(sim.broker.stats().dropped_memory_budget, 2);
}

#[test]
fn max_keep_alive_is_imposed_with_server_keep_alive() {
    // 5.0 [MQTT-3.1.2-21]: the client uses the Server Keep Alive; the server holds it to it.
    let mut sim = Sim::new(BrokerConfig {
        max_keep_alive: Some(20),
        sys_interval: None,
        ..Default::default()
    });
    let mut c = Connect::new(V5, MqttString::new("k").unwrap());
    c.keep_alive = 600;
    let id = sim.connect_with(c, Default::default());
    assert_eq!(
        sim.connack(id).unwrap().properties.server_keep_alive,
        Some(20)
    );
    assert_eq!(sim.broker.clients()[0].keep_alive, 20);
    // Silent for 1.5 x 20 s: closed.
    sim.clients.get_mut(&id).unwrap().transport_open = false;
    sim.advance(Duration::from_secs(31));
    assert!(sim.broker.clients().is_empty());
}

/// A publisher's QoS 1 or 2 message held for the store: its connection breaks before the
/// record is durable, it resumes and sends the message again ([MQTT-4.4.0-1]). The resend is
/// the same message (its packet id is still in use, [MQTT-2.2.1-3]): not routed twice, and
/// one acknowledgement, on the new connection, once the record is durable.
fn durable_ack_follows_the_session_to_its_next_connection(qos: QoS) {
    let mut sim = Sim::new(BrokerConfig {
        persistence: true,
        sys_interval: None,
        ..Default::default()
    });
    sim.auto_flush = false;
    // A stored session holds a copy (QoS 1), or the incoming QoS 2 id is stored: the
    // acknowledgement waits for the store.
    let s = sim.connect(V5, "s", false);
    sim.subscribe(s, "t", qos);
    let p = sim.connect(V5, "p", false);
    sim.publish(p, "t", "once", qos, false);
    assert_eq!(sim.payloads(s), ["once"]);
    let seq = sim
        .outputs
        .iter()
        .find_map(|o| match o {
            Output::Store(Record::Sync { seq }) => Some(*seq),
            _ => None,
        })
        .unwrap();
    sim.cut(p);
    let id = sim.resume(p, V5, "p");
    assert_eq!(sim.payloads(s), ["once"], "not routed twice");
    let acks = |sim: &Sim| {
        sim.clients[&id]
            .events
            .iter()
            .filter(|e| matches!(e, Event::Delivered { .. }))
            .count()
    };
    assert_eq!(
        acks(&sim),
        0,
        "no acknowledgement before the record is durable"
    );
    sim.broker.handle_durable(sim.now, seq);
    sim.run();
    assert_eq!(acks(&sim), 1, "one acknowledgement, on the new connection");
}

#[test]
fn durable_pubrec_follows_the_session_to_its_next_connection() {
    durable_ack_follows_the_session_to_its_next_connection(QoS::ExactlyOnce);
}

#[test]
fn durable_puback_follows_the_session_to_its_next_connection() {
    durable_ack_follows_the_session_to_its_next_connection(QoS::AtLeastOnce);
}

#[test]
fn outgoing_topic_aliases_by_default_when_the_client_allows_them() {
    // 5.0: with the default configuration the broker uses aliases up to the client's
    // Topic Alias Maximum, never above it ([MQTT-3.3.2-11]); a later PUBLISH on the same
    // topic carries the alias and an empty topic name, and the client still sees the
    // topic. Conformance suites expect this of a server whose client allows aliases.
    let mut sim = Sim::new(BrokerConfig {
        sys_interval: None,
        ..Default::default()
    });
    let s = sim.connect_with(
        Connect::new(V5, MqttString::new("s").unwrap()),
        mqtt_session::Config {
            topic_alias_maximum: 4,
            ..Default::default()
        },
    );
    sim.subscribe(s, "long/topic/name", QoS::AtMostOnce);
    let no_alias = sim.connect_with(
        Connect::new(V5, MqttString::new("n").unwrap()),
        mqtt_session::Config {
            topic_alias_maximum: 0,
            ..Default::default()
        },
    );
    sim.subscribe(no_alias, "long/topic/name", QoS::AtMostOnce);
    let p = sim.connect(V5, "p", true);
    sim.clear();
    for m in ["one", "two"] {
        sim.publish(p, "long/topic/name", m, QoS::AtMostOnce, false);
    }
    let wire = |sim: &Sim, id: ConnId| -> Vec<Publish> {
        let mut d = mqtt_proto::Decoder::client(V5);
        let mut buf = bytes::BytesMut::new();
        for o in &sim.outputs {
            if let Output::Transmit(to, b) = o {
                if *to == id {
                    buf.extend_from_slice(b);
                }
            }
        }
        let mut v = vec![];
        while let Some(Packet::Publish(p)) = d.decode(&mut buf).unwrap() {
            v.push(p);
        }
        v
    };
    let sent = wire(&sim, s);
    assert_eq!(sent.len(), 2);
    assert!(sent[0].properties.topic_alias.is_some());
    assert_eq!(sent[1].topic.as_str(), "", "the alias stands for the topic");
    assert_eq!(
        sent[1].properties.topic_alias,
        sent[0].properties.topic_alias
    );
    assert_eq!(sim.payloads(s), ["one", "two"]);
    assert!(sim
        .messages(s)
        .iter()
        .all(|m| m.topic.as_str() == "long/topic/name"));
    // A client that allows no aliases gets none.
    assert!(wire(&sim, no_alias)
        .iter()
        .all(|p| p.properties.topic_alias.is_none() && p.topic.as_str() == "long/topic/name"));
    // Mappings belong to one connection ([MQTT-3.3.2-7]): after reconnecting, the first
    // copy names its topic again. With a Topic Alias Maximum of 1, a second topic gets no
    // alias ([MQTT-3.3.2-11]).
    sim.disconnect(s, ReasonCode::Success);
    let s = sim.connect_with(
        Connect::new(V5, MqttString::new("s").unwrap()),
        mqtt_session::Config {
            topic_alias_maximum: 1,
            ..Default::default()
        },
    );
    sim.subscribe(s, "long/#", QoS::AtMostOnce);
    sim.clear();
    for t in [
        "long/topic/name",
        "long/other",
        "long/topic/name",
        "long/other",
    ] {
        sim.publish(p, t, "x", QoS::AtMostOnce, false);
    }
    let sent = wire(&sim, s);
    let seen: Vec<(&str, Option<u16>)> = sent
        .iter()
        .map(|p| (p.topic.as_str(), p.properties.topic_alias.map(|a| a.get())))
        .collect();
    assert_eq!(
        seen,
        [
            ("long/topic/name", Some(1)),
            ("long/other", None),
            ("", Some(1)),
            ("long/other", None)
        ]
    );
}

#[test]
fn queue_gauges_count_online_and_offline_queues() {
    let mut sim = Sim::default();
    assert_eq!(sim.broker.queue_gauges(), QueueGauges::default());
    // Online, with a window of 2 it does not acknowledge: 2 inflight, the rest queued.
    let slow = sim.connect_with(
        Connect::new(V5, MqttString::new("slow").unwrap()),
        mqtt_session::Config {
            receive_maximum: 2,
            manual_acks: true,
            ..Default::default()
        },
    );
    sim.subscribe(slow, "q", QoS::AtLeastOnce);
    // Offline: everything queued.
    let away = sim.connect(V3_1_1, "away", false);
    sim.subscribe(away, "q", QoS::AtLeastOnce);
    sim.disconnect(away, ReasonCode::Success);
    let p = sim.connect(V5, "p", true);
    for i in 0..5 {
        sim.publish(p, "q", &format!("message-{i}"), QoS::AtLeastOnce, false);
    }
    assert_eq!(
        sim.broker.queue_gauges(),
        QueueGauges {
            queued_messages: 3 + 5,
            queued_bytes: (3 + 5) * 9,
            inflight_messages: 2,
            max_session_queued_messages: 5,
        }
    );
    // The offline session's queue moves to its connection and drains.
    let away = sim.connect(V3_1_1, "away", false);
    assert_eq!(sim.payloads(away).len(), 5);
    let g = sim.broker.queue_gauges();
    assert_eq!((g.queued_messages, g.max_session_queued_messages), (3, 3));
}

#[test]
fn qos0_for_a_client_with_a_write_backlog_is_dropped_and_counted() {
    let mut sim = Sim::new(BrokerConfig {
        sys_interval: None,
        ..Default::default()
    });
    let s = sim.connect(V5, "s", true);
    sim.subscribe(s, "t", QoS::AtLeastOnce);
    let p = sim.connect(V5, "p", true);
    // The adapter has more waiting to be written to `s` than it allows.
    sim.broker.set_write_backlog(s, true);
    sim.publish(p, "t", "dropped", QoS::AtMostOnce, false);
    // QoS 1 is bounded by the inflight window and the queue: still sent.
    sim.publish(p, "t", "kept", QoS::AtLeastOnce, false);
    assert_eq!(sim.broker.stats().dropped_write_backlog, 1);
    assert_eq!(sim.broker.stats().messages_sent, 1);
    assert_eq!(sim.drop_events(Drop::WriteBacklog), 1);
    // Caught up: QoS 0 goes out again.
    sim.broker.set_write_backlog(s, false);
    sim.publish(p, "t", "sent", QoS::AtMostOnce, false);
    assert_eq!(sim.payloads(s), ["kept", "sent"]);
    assert_eq!(sim.broker.stats().dropped_write_backlog, 1);
}

/// A second CONNECT on a connection is a protocol violation that closes it
/// ([MQTT-3.1.0-2]), after the client id had a session with a subscription and messages
/// (the conformance suite of Eclipse paho does this).
#[test]
fn a_second_connect_closes_the_connection() {
    let mut sim = Sim::default();
    for round in 0..2 {
        let id = sim.connect(V5, "c", true);
        if round == 0 {
            sim.subscribe(id, "t", QoS::ExactlyOnce);
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                sim.publish(id, "t", "m", qos, false);
            }
            assert_eq!(sim.payloads(id).len(), 3);
            sim.disconnect(id, ReasonCode::Success);
            continue;
        }
        let mut again = bytes::BytesMut::new();
        Packet::Connect(Box::new(Connect::new(V5, MqttString::new("c").unwrap())))
            .encode(&mut again, V5, u32::MAX)
            .unwrap();
        let now = sim.now;
        sim.broker.handle_input(now, id, &again);
        sim.run();
        assert!(
            sim.outputs
                .iter()
                .any(|o| matches!(o, Output::Close(c) if *c == id)),
            "the connection is closed"
        );
        assert!(sim.closed(id).is_some(), "the client saw it closed");
    }
}
