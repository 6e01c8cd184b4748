//! The checks behind the `config` fuzz target: `mqtt_adapter_common::config::Config::parse` on
//! any text (the target makes the input UTF-8 first, replacing what is not).
//!
//! Any failed check is a panic:
//!
//! - `parse` never panics, and is deterministic: the same text gives the same
//!   configuration (compared by its `Debug` form) or the same error;
//! - an error is a message that names something (non-empty);
//! - an accepted configuration holds every invariant the broker relies on ([`check`]):
//!   at least one listener; each with a known protocol; `tls`/`wss` with `cert` and
//!   `key`; `cert`, `key` and `client_ca` only there; `use_identity_as_username` only
//!   with `client_ca`; a WebSocket path that starts with `/` or is `*`; anonymous
//!   access by default only on loopback; Maximum QoS 0 to 2; a known drop policy; a
//!   denied subscription code of 0x80 or 0x87; a maximum packet size of at least 64;
//!   Receive Maximum and inflight window of at least 1; a connect timeout of at least
//!   1 s; every duration at most [`MAX_SECS`]; a known log level; and `broker_config()`
//!   carries every limit to the core unchanged;
//! - the broker core runs with it ([`drive`]): `Broker::new`, a 3.1.1 client with a
//!   persistent session and a 5.0 client asking for the longest Session Expiry Interval
//!   (with a delayed will) connect, subscribe, publish and go away, and time jumps past
//!   every deadline the configuration can set, up to 200 years. Nothing panics (a
//!   duration added to an `Instant` used to overflow here).

use bytes::BytesMut;
use mqtt_adapter_common::config::{Config, MAX_SECS};
use mqtt_broker::{AuthResult, Broker, ConnInfo, DropPolicy, Output};
use mqtt_proto::{
    Connect, MqttString, Packet, ProtocolVersion, Publish, QoS, Subscribe, Subscription,
    SubscriptionOptions, TopicFilter, TopicName, Will, MAX_PACKET_SIZE,
};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

/// Parses `text` and checks what comes out.
pub fn run(text: &str) {
    let first = Config::parse(text);
    match (&first, &Config::parse(text)) {
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "not deterministic"),
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "not deterministic");
            assert!(!a.trim().is_empty(), "an empty error message");
        }
        (a, b) => panic!("not deterministic: {a:?} then {b:?}"),
    }
    if let Ok(c) = first {
        check(&c);
        drive(&c);
    }
}

/// The invariants of an accepted configuration.
pub fn check(c: &Config) {
    assert!(!c.listeners.is_empty(), "no listener");
    for l in &c.listeners {
        let tls = match l.protocol.as_str() {
            "tls" | "wss" => true,
            "tcp" | "ws" => false,
            p => panic!("protocol {p:?}"),
        };
        if tls {
            assert!(
                l.cert.is_some() && l.key.is_some(),
                "TLS without files: {l:?}"
            );
        } else {
            assert!(
                l.cert.is_none() && l.key.is_none() && l.client_ca.is_none(),
                "TLS files on a plaintext listener: {l:?}"
            );
        }
        assert!(
            !l.use_identity_as_username || (tls && l.client_ca.is_some()),
            "identity without a client CA: {l:?}"
        );
        assert!(
            l.path == "*" || l.path.starts_with('/'),
            "path {:?}",
            l.path
        );
        assert_eq!(
            l.allows_anonymous(),
            l.allow_anonymous.unwrap_or(l.bind.ip().is_loopback()),
            "anonymous access by default off loopback: {l:?}"
        );
    }
    let l = &c.limits;
    assert!(l.maximum_qos <= 2);
    assert!(matches!(
        l.drop_policy.as_str(),
        "drop-newest" | "drop-oldest"
    ));
    assert!(matches!(l.subscribe_denied_code, 0x80 | 0x87));
    assert!(l.max_packet_size >= 64);
    assert!(l.receive_maximum >= 1 && l.max_inflight >= 1);
    assert!((1..=MAX_SECS).contains(&l.connect_timeout_secs));
    assert!(c.sessions.persistent_session_expiry_secs <= MAX_SECS);
    assert!(c.sessions.max_session_expiry_secs <= MAX_SECS);
    assert!(c.sys.interval_secs <= MAX_SECS);
    assert!(matches!(
        c.log.level.as_str(),
        "error" | "warn" | "info" | "debug" | "trace"
    ));
    // What reaches the core.
    let b = c.broker_config();
    let s = &b.session;
    assert_eq!(s.max_packet_size, l.max_packet_size);
    assert_eq!(s.receive_maximum, l.receive_maximum);
    assert_eq!(s.max_inflight, l.max_inflight);
    assert_eq!(s.max_queued_messages, l.max_queued_messages);
    assert_eq!(s.max_queued_bytes, l.max_queued_bytes);
    assert_eq!(s.topic_alias_maximum, l.topic_alias_maximum);
    assert_eq!(
        s.connect_timeout,
        Duration::from_secs(l.connect_timeout_secs)
    );
    assert_eq!(b.maximum_qos as u8, l.maximum_qos);
    assert_eq!(s.maximum_qos, b.maximum_qos);
    assert_eq!(b.subscribe_denied_code as u8, l.subscribe_denied_code);
    assert_eq!(
        b.drop_policy,
        if l.drop_policy == "drop-oldest" {
            DropPolicy::DropOldest
        } else {
            DropPolicy::DropNewest
        }
    );
    assert_eq!(
        (
            b.max_offline_messages,
            b.max_offline_bytes,
            b.queue_qos0_offline
        ),
        (
            l.max_offline_messages,
            l.max_offline_bytes,
            l.queue_qos0_offline
        )
    );
    assert_eq!(
        (
            b.max_subscriptions,
            b.max_topic_levels,
            b.max_topic_length,
            b.max_keep_alive
        ),
        (
            l.max_subscriptions,
            l.max_topic_levels,
            l.max_topic_length,
            l.max_keep_alive
        )
    );
    assert_eq!(
        b.persistent_session_expiry,
        Duration::from_secs(c.sessions.persistent_session_expiry_secs)
    );
    assert_eq!(
        b.max_session_expiry,
        Duration::from_secs(c.sessions.max_session_expiry_secs)
    );
    assert_eq!(
        b.sys_interval,
        (c.sys.interval_secs > 0).then(|| Duration::from_secs(c.sys.interval_secs))
    );
    assert_eq!(
        b.authenticate,
        c.auth.password_file.is_some() || c.listeners.iter().any(|l| l.use_identity_as_username)
    );
}

fn encode(v: ProtocolVersion, p: Packet) -> BytesMut {
    let mut b = BytesMut::new();
    p.encode(&mut b, v, MAX_PACKET_SIZE).expect("encodable");
    b
}

/// Runs the broker core with the configuration: two clients come and go, and time
/// jumps past every deadline.
pub fn drive(c: &Config) {
    let start = Instant::now();
    let mut broker = Broker::new(c.broker_config(), start);
    let s = |v: &str| MqttString::new(v).expect("valid");
    let mut v3 = Connect::new(ProtocolVersion::V3_1_1, s("c3"));
    v3.clean_start = false;
    let mut v5 = Connect::new(ProtocolVersion::V5, s("c5"));
    v5.clean_start = false;
    v5.keep_alive = 0;
    v5.properties.session_expiry_interval = Some(u32::MAX);
    let mut will = Will {
        topic: TopicName::new("w").expect("valid"),
        payload: "gone".into(),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
    };
    will.properties.will_delay_interval = Some(u32::MAX);
    v5.will = Some(Box::new(will));
    let id = NonZeroU16::new(1).expect("non-zero");
    for (conn, v, connect) in [
        (1, ProtocolVersion::V3_1_1, v3),
        (2, ProtocolVersion::V5, v5),
    ] {
        broker.handle_connection(
            start,
            conn,
            ConnInfo {
                peer: "fuzz".into(),
                listener: "fuzz".into(),
                tls_identity: None,
                allow_anonymous: Some(true),
            },
        );
        let mut bytes = encode(v, Packet::Connect(Box::new(connect)));
        bytes.extend(encode(
            v,
            Packet::Subscribe(Subscribe {
                packet_id: id,
                properties: Default::default(),
                subscriptions: vec![Subscription {
                    filter: TopicFilter::new("#").expect("valid"),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..Default::default()
                    },
                }],
            }),
        ));
        let mut p = Publish::new(TopicName::new("t").expect("valid"), "m");
        p.qos = QoS::AtLeastOnce;
        p.retain = true;
        p.packet_id = Some(id);
        bytes.extend(encode(v, Packet::Publish(p)));
        broker.handle_input(start, conn, &bytes);
        drain(&mut broker, start);
    }
    // Both leave without DISCONNECT: the sessions are parked, the 5.0 will waits.
    broker.handle_closed(start, 1);
    broker.handle_closed(start, 2);
    drain(&mut broker, start);
    let secs = |s: u64| Duration::from_secs(s);
    let l = &c.limits;
    let mut steps = vec![
        secs(1),
        secs(l.connect_timeout_secs),
        secs(c.sys.interval_secs),
        secs(l.max_keep_alive.unwrap_or(60).into()) * 2,
        secs(c.sessions.persistent_session_expiry_secs),
        secs(c.sessions.max_session_expiry_secs),
        secs(u32::MAX.into()),
        secs(200 * 365 * 86_400),
    ];
    steps.sort();
    let mut last = start;
    for d in steps {
        let Some(now) = start.checked_add(d + secs(1)) else {
            continue;
        };
        last = now;
        // Deadlines are met: a few calls leave none due.
        for _ in 0..8 {
            match broker.poll_timeout() {
                Some(t) if t <= now => broker.handle_timeout(now),
                _ => break,
            }
            drain(&mut broker, now);
        }
        assert!(
            broker.poll_timeout().is_none_or(|t| t > now),
            "a deadline stays due"
        );
    }
    broker.shutdown(last);
    drain(&mut broker, last);
}

/// Takes every output; authentication requests are allowed.
fn drain(broker: &mut Broker, now: Instant) {
    while let Some(o) = broker.poll_output() {
        if let Output::Authenticate(req) = o {
            broker.handle_auth(now, req.conn, AuthResult::Allow { username: None });
        }
    }
}
