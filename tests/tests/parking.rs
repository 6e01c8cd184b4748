//! Plain TCP connections of the tokio broker start parked, and idle ones park again
//! (`[runtime] park_idle_ms`): one shared poller watches their sockets and serves their
//! short exchanges, and a connection has a task only while it is busy. A parked connection must behave
//! as any other: output the broker queues for it, input it sends, its peer closing it, a
//! shutdown and the keep-alive all wake it, and nothing is lost on the way.

use adapter_tokio::config::Config;
use adapter_tokio::server::{start, Running};
use mqtt_proto::{Packet, ProtocolVersion, QoS, ReasonCode};
use mqtt_tests::raw::{frame, publish_qos1_packet, subscribe_packet, Raw};
use std::net::SocketAddr;
use std::time::Duration;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

async fn broker(park_idle_ms: u64) -> (Running, SocketAddr) {
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n\
         [persistence]\nenabled = false\n[runtime]\npark_idle_ms = {park_idle_ms}\n"
    );
    let running = start(Config::parse(&text).unwrap(), None).await.unwrap();
    let addr = running.local_addrs[0];
    (running, addr)
}

/// Waits (up to 10 s) until `n` connections are parked.
async fn parked(running: &Running, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while running.parked_connections() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} connections parked, not {n}",
            running.parked_connections()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (up to 10 s) until the broker counts `n` connections.
async fn connections(running: &Running, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while running.gauges().await.unwrap().connections != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {n} connections"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn subscribed(addr: SocketAddr, v: ProtocolVersion, id: &str, filter: &str) -> Raw {
    let mut c = Raw::connected_with_keep_alive(addr, v, id, 0).await;
    // The filter's options byte (QoS 0) raised to QoS 1.
    let mut subscribe = subscribe_packet(v, 1, &[filter.as_bytes()]);
    *subscribe.last_mut().unwrap() = 1;
    c.send(&subscribe).await;
    match c.next().await {
        Some(Packet::SubAck(s)) => assert_eq!(s.reason_codes, [ReasonCode::GrantedQoS1]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    c
}

/// A PINGREQ, answered by a PINGRESP.
async fn pinged(c: &mut Raw) {
    c.send(&frame(0xC0, &[])).await;
    assert_eq!(c.next().await, Some(Packet::PingResp));
}

fn puback(id: u16) -> Vec<u8> {
    frame(0x40, &id.to_be_bytes())
}

/// A parked subscriber is woken by the message the broker queues for it, a parked
/// publisher by its own PUBLISH; both park again afterwards and answer a PINGREQ.
#[tokio::test]
async fn parked_connections_wake_for_output_and_input() {
    let (running, addr) = broker(5).await;
    let mut sub = subscribed(addr, V5, "sub", "t/#").await;
    let mut publisher = Raw::connected_with_keep_alive(addr, V311, "pub", 0).await;
    parked(&running, 2).await;

    for i in 1..=3u16 {
        let payload = format!("message {i}");
        publisher
            .send(&publish_qos1_packet(V311, b"t/1", i, payload.as_bytes()))
            .await;
        match publisher.next().await {
            Some(Packet::PubAck(a)) => assert_eq!(a.packet_id.get(), i),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        let id = match sub.next().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(&p.payload[..], payload.as_bytes());
                assert_eq!(p.qos, QoS::AtLeastOnce);
                assert!(!p.dup, "a first delivery has DUP 0 [MQTT-3.3.1-1]");
                p.packet_id.expect("QoS 1").get()
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        };
        sub.send(&puback(id)).await;
        // Both park again before the next round.
        parked(&running, 2).await;
    }

    for c in [&mut sub, &mut publisher] {
        pinged(c).await;
    }
    parked(&running, 2).await;
    running.shutdown().await;
}

/// A peer that closes a parked connection ends it (the broker counts it gone and
/// publishes its will); a parked 5.0 client gets its DISCONNECT 0x8B at shutdown.
#[tokio::test]
async fn parked_connections_end_when_their_peer_or_the_broker_closes() {
    let (running, addr) = broker(5).await;
    let mut watcher = subscribed(addr, V5, "watcher", "will").await;
    // A 3.1.1 CONNECT with a will on `will`, keep-alive 0.
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02 | 0x04, 0, 0];
    for s in [&b"leaver"[..], b"will", b"gone"] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s);
    }
    let mut leaver = Raw::open(addr).await;
    leaver.send(&frame(0x10, &body)).await;
    assert!(matches!(leaver.next().await, Some(Packet::ConnAck(_))));
    parked(&running, 2).await;

    drop(leaver);
    match watcher.next().await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"gone"),
        other => panic!("expected the will, got {other:?}"),
    }
    connections(&running, 1).await;
    parked(&running, 1).await;

    let shutdown = tokio::spawn(async move { running.shutdown().await });
    match watcher.next().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::ServerShuttingDown),
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    assert_eq!(watcher.next().await, None);
    shutdown.await.unwrap();
}

/// Many parked subscribers woken together by one message all get it.
#[tokio::test]
async fn many_parked_subscribers_all_get_a_message() {
    let (running, addr) = broker(5).await;
    let mut subs = vec![];
    for i in 0..100 {
        subs.push(subscribed(addr, V311, &format!("s{i}"), "fan/out").await);
    }
    let mut publisher = Raw::connected_with_keep_alive(addr, V5, "pub", 0).await;
    parked(&running, 101).await;
    publisher
        .send(&publish_qos1_packet(V5, b"fan/out", 7, b"to all"))
        .await;
    assert!(matches!(publisher.next().await, Some(Packet::PubAck(_))));
    for s in &mut subs {
        match s.next().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(&p.payload[..], b"to all");
                let id = p.packet_id.expect("QoS 1").get();
                s.send(&puback(id)).await;
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    parked(&running, 101).await;

    // A PINGREQ every 2 ms for about 200 ms, every one answered, then it parks too.
    let mut pinger = Raw::connected_with_keep_alive(addr, V311, "pinger", 0).await;
    for _ in 0..100 {
        pinged(&mut pinger).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    parked(&running, 102).await;
    running.shutdown().await;
}

/// With `park_idle_ms = 0`, no connection parks.
#[tokio::test]
async fn parking_can_be_turned_off() {
    let (running, addr) = broker(0).await;
    let mut c = subscribed(addr, V311, "c", "t").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(running.parked_connections(), 0);
    pinged(&mut c).await;
    running.shutdown().await;
}

/// A parked client that stops sending is closed when its keep-alive runs out (one and a
/// half times it, [MQTT-3.1.2-24]): the broker's timer wakes the parked connection.
#[tokio::test]
async fn a_parked_client_silent_past_its_keep_alive_is_closed() {
    let (running, addr) = broker(5).await;
    let c = Raw::connected_with_keep_alive(addr, V311, "quiet", 1).await;
    parked(&running, 1).await;
    let started = std::time::Instant::now();
    let closed = c.closed().await;
    assert!(closed.packets.is_empty(), "{:?}", closed.packets);
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after <= Duration::from_secs(5),
        "closed after {after:?}"
    );
    connections(&running, 0).await;
    assert_eq!(running.parked_connections(), 0);
    running.shutdown().await;
}

/// A client that connects with the client id of a parked one takes its session over:
/// the parked connection is closed (5.0: DISCONNECT 0x8E, [MQTT-3.1.4-3]) and the new one
/// gets what is published next.
#[tokio::test]
async fn a_parked_client_is_taken_over() {
    let (running, addr) = broker(5).await;
    let old = subscribed(addr, V5, "same", "over/#").await;
    parked(&running, 1).await;
    let mut new = Raw::connected_with_keep_alive(addr, V5, "same", 0).await;
    let closed = old.closed().await;
    assert_eq!(closed.reason(), Some(ReasonCode::SessionTakenOver));
    new.send(&subscribe_packet(V5, 2, &[b"over/#"])).await;
    assert!(matches!(new.next().await, Some(Packet::SubAck(_))));
    parked(&running, 1).await;
    running
        .publish(mqtt_proto::Publish::new(
            mqtt_proto::TopicName::new("over/there").unwrap(),
            "after",
        ))
        .await
        .unwrap();
    match new.next().await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"after"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    running.shutdown().await;
}

/// A new connection starts parked, and the lot answers its short exchanges itself
/// (CONNECT, SUBSCRIBE, a message to it and its PUBACK, a ping: 8 reads and writes): it
/// stays parked throughout. Input
/// that starts with a PUBLISH, and a connection busier than the lot serves (more than 8
/// reads and writes a second), get the connection a task. With the longest wait before
/// parking, nothing parks again during the test.
#[tokio::test]
async fn quiet_connections_are_served_parked_and_busy_ones_get_a_task() {
    let (running, addr) = broker(60_000).await;
    let mut sub = subscribed(addr, V311, "sub", "t").await;
    assert_eq!(
        running.parked_connections(),
        1,
        "a new connection is parked"
    );
    let mut publisher = Raw::connected_with_keep_alive(addr, V311, "pub", 0).await;
    parked(&running, 2).await;

    // A PUBLISH: the publisher gets a task; the message reaches the parked subscriber,
    // which the lot writes to, and its PUBACK is read by the lot.
    publisher
        .send(&publish_qos1_packet(V311, b"t", 1, b"m"))
        .await;
    match publisher.next().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.packet_id.get(), 1),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    match sub.next().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(&p.payload[..], b"m");
            sub.send(&puback(p.packet_id.unwrap().get())).await;
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    pinged(&mut sub).await;
    assert_eq!(
        running.parked_connections(),
        1,
        "the subscriber stays parked"
    );

    // Pings, one after the other: past 8 reads and writes in a second, a task.
    for _ in 0..20 {
        pinged(&mut sub).await;
    }
    parked(&running, 0).await;
    pinged(&mut sub).await;
    running.shutdown().await;
}
