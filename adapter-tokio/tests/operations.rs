//! Operations: the metrics endpoint, anonymous access per listener, max connections,
//! graceful shutdown telling 5.0 clients why, a connection the broker closes letting the
//! client read its last packets, enhanced authentication refused, and a SUBSCRIBE and a
//! PUBLISH that arrive together on two connections handled in arrival order.

use adapter_tokio::client::{Client, ClientOptions};
use adapter_tokio::config::Config;
use adapter_tokio::server::start;
use mqtt_proto::QoS;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint() {
    let text = "[[listener]]\nbind = \"127.0.0.1:0\"\n[metrics]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n";
    let running = start(
        Config::parse(&format!("{text}\n[persistence]\nenabled = false\n")).unwrap(),
        None,
    )
    .await
    .unwrap();
    let addr = running.local_addrs[0].to_string();
    let (c, _rx) = Client::connect(ClientOptions::new(&addr, "m"))
        .await
        .unwrap();
    c.subscribe("a", QoS::AtMostOnce).await.unwrap();
    c.publish("a", "x", QoS::AtLeastOnce, false).await.unwrap();
    // A persistent session away: three messages (12 payload bytes) wait for it.
    let (away, _) = Client::connect(ClientOptions::new(&addr, "away"))
        .await
        .unwrap();
    away.subscribe("q", QoS::AtLeastOnce).await.unwrap();
    away.disconnect().await;
    // Offline for sure before the messages come.
    tokio::time::timeout(Duration::from_secs(5), async {
        while running.gauges().await.unwrap().connections > 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    for p in ["one", "two", "three!"] {
        c.publish("q", p, QoS::AtLeastOnce, false).await.unwrap();
    }
    let m = running.metrics_addr.unwrap();
    let body = get(m, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    for line in [
        "mqtt_connections 1",
        "mqtt_subscriptions 2",
        "mqtt_messages_received_total 4",
        "mqtt_messages_sent_total 1",
        "mqtt_queued_messages 3",
        "mqtt_queued_bytes 12",
        "mqtt_session_queued_messages_max 3",
        "mqtt_inflight_messages 0",
        "# TYPE mqtt_queued_messages gauge",
        // Everything written: the client read its acknowledgements.
        "mqtt_pending_write_bytes 0",
        "mqtt_connection_pending_write_bytes_max 0",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "{line} missing in:\n{body}"
        );
    }
    assert!(get(m, "/other").await.starts_with("HTTP/1.1 404"));
    c.disconnect().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_can_be_refused_per_listener() {
    let text =
        "[[listener]]\nbind = \"127.0.0.1:0\"\nallow_anonymous = false\n[sys]\ninterval_secs = 0\n";
    let running = start(
        Config::parse(&format!("{text}\n[persistence]\nenabled = false\n")).unwrap(),
        None,
    )
    .await
    .unwrap();
    let mut o = ClientOptions::new(&running.local_addrs[0].to_string(), "anon");
    o.reconnect = None;
    let err = Client::connect(o).await.err().expect("refused");
    assert!(err.to_string().contains("NotAuthorized"), "{err}");
    assert!(matches!(
        err.downcast_ref::<adapter_tokio::client::ClientError>(),
        Some(adapter_tokio::client::ClientError::ConnectRefused(
            mqtt_proto::ReasonCode::NotAuthorized
        ))
    ));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections() {
    let text = "[[listener]]\nbind = \"127.0.0.1:0\"\n[limits]\nmax_connections = 1\n[sys]\ninterval_secs = 0\n";
    let running = start(
        Config::parse(&format!("{text}\n[persistence]\nenabled = false\n")).unwrap(),
        None,
    )
    .await
    .unwrap();
    let addr = running.local_addrs[0].to_string();
    let (first, _rx) = Client::connect(ClientOptions::new(&addr, "one"))
        .await
        .unwrap();
    let mut o = ClientOptions::new(&addr, "two");
    o.reconnect = None;
    assert!(
        Client::connect(o).await.is_err(),
        "the second connection is closed"
    );
    first.disconnect().await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_v5_clients() {
    let text = "[[listener]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n";
    let running = start(
        Config::parse(&format!("{text}\n[persistence]\nenabled = false\n")).unwrap(),
        None,
    )
    .await
    .unwrap();
    let addr = running.local_addrs[0];
    // A raw 5.0 client: CONNECT, then read until the broker closes.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03raw")
        .await
        .unwrap();
    let mut connack = [0u8; 16];
    let n = s.read(&mut connack).await.unwrap();
    assert_eq!(connack[0], 0x20, "{:?}", &connack[..n]);
    running.shutdown().await;
    let mut rest = vec![];
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    // DISCONNECT with 0x8B Server shutting down.
    assert_eq!(&rest[..3], b"\xe0\x01\x8b", "{rest:?}");
}

/// A 5.0 client that sends more QoS 2 messages than the broker's Receive Maximum is
/// disconnected with 0x93 (it breaks [MQTT-3.3.4-7]). Such a client typically goes on sending
/// (PUBRELs for the PUBRECs it is about to read, pings) before it reads the DISCONNECT. The
/// broker keeps reading and discarding for a while after closing its side, so what the
/// client still sends does not reset the connection, and the client reads the DISCONNECT
/// that says why (a reset would discard it unread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_still_delivers_its_disconnect() {
    use bytes::BytesMut;
    use mqtt_proto::{Decoder, Packet, ProtocolVersion, ReasonCode};
    let text = "[[listener]]\nbind = \"127.0.0.1:0\"\n[limits]\nreceive_maximum = 3\n\
                [sys]\ninterval_secs = 0\n[persistence]\nenabled = false\n";
    let running = start(Config::parse(text).unwrap(), None).await.unwrap();
    let mut s = TcpStream::connect(running.local_addrs[0]).await.unwrap();
    s.write_all(b"\x10\x10\x00\x04MQTT\x05\x02\x00\x00\x00\x00\x03raw")
        .await
        .unwrap();
    // Four QoS 2 PUBLISHes to "t", ids 1 to 4: one more than Receive Maximum.
    let mut burst = vec![];
    for id in 1..=4u8 {
        burst.extend_from_slice(&[0x34, 7, 0, 1, b't', 0, id, 0, b'x']);
    }
    s.write_all(&burst).await.unwrap();
    // The broker has answered and closed its side; the client, not knowing yet, sends
    // more, each packet reaching the broker before the next leaves.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        s.write_all(b"\xc0\x00")
            .await
            .expect("the broker still reads after closing its side");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut decoder = Decoder::client(ProtocolVersion::V5);
    let mut buf = BytesMut::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let reason = 'read: loop {
        while let Some(p) = decoder.decode(&mut buf).unwrap() {
            match p {
                Packet::ConnAck(_) | Packet::PubRec(_) => {}
                Packet::Disconnect(d) => break 'read d.reason_code,
                other => panic!("unexpected {other:?}"),
            }
        }
        let n = tokio::time::timeout_at(deadline, s.read_buf(&mut buf))
            .await
            .expect("the DISCONNECT in time")
            .expect("no reset: the broker drains what the client still sends");
        assert!(n > 0, "closed before the DISCONNECT");
    };
    assert_eq!(reason, ReasonCode::ReceiveMaximumExceeded);
    running.shutdown().await;
}

/// 5.0 [MQTT-4.12.0-1]: the broker checks passwords and certificates and implements no
/// enhanced authentication method, so a client asking for one is refused with 0x8C Bad
/// authentication method and the connection closed, even with a right password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enhanced_authentication_method_is_refused() {
    use bytes::BytesMut;
    use mqtt_proto::{Connect, MqttString, Packet, ProtocolVersion, MAX_PACKET_SIZE};
    let dir = std::env::temp_dir().join(format!("mqtt-ops-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut passwords = adapter_tokio::auth::Passwords::parse("").unwrap();
    passwords.set("alice", "secret").unwrap();
    let file = dir.join("passwd");
    std::fs::write(&file, passwords.to_text()).unwrap();
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[auth]\npassword_file = \"{}\"\n\
         [sys]\ninterval_secs = 0\n[persistence]\nenabled = false\n",
        file.display()
    );
    let running = start(Config::parse(&text).unwrap(), None).await.unwrap();
    let mut c = Connect::new(ProtocolVersion::V5, MqttString::new("sasl").unwrap());
    c.username = Some(MqttString::new("alice").unwrap());
    c.password = Some(bytes::Bytes::from_static(b"secret"));
    c.properties.authentication_method = Some(MqttString::new("SCRAM-SHA-256").unwrap());
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(c))
        .encode(&mut out, ProtocolVersion::V5, MAX_PACKET_SIZE)
        .unwrap();
    let mut s = TcpStream::connect(running.local_addrs[0]).await.unwrap();
    s.write_all(&out).await.unwrap();
    let mut rest = vec![];
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap();
    // CONNACK: no session present, 0x8C, then the connection ends.
    assert_eq!(&rest[..4], b"\x20\x03\x00\x8c", "{rest:?}");
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Client B sends a SUBSCRIBE and, right after, client A a PUBLISH on that topic; both
/// become readable in the same instant. On one worker thread tokio runs the task woken
/// last first, so without care A's PUBLISH would be routed before B's subscription exists.
/// The broker handles them in arrival order and B gets every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_subscribe_and_a_publish_arriving_together_keep_their_order() {
    use bytes::BytesMut;
    use mqtt_proto::{Decoder, Packet, ProtocolVersion};
    let text = "[[listener]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n\
                [persistence]\nenabled = false\n";
    let running = start(Config::parse(text).unwrap(), None).await.unwrap();
    let addr = running.local_addrs[0];
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    for (s, id) in [(&mut a, b'a'), (&mut b, b'b')] {
        s.write_all(&[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 1, id])
            .await
            .unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).await.unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
    }
    let mut decoder = Decoder::client(ProtocolVersion::V3_1_1);
    let mut buf = BytesMut::new();
    let mut missed = vec![];
    for i in 0..20u8 {
        let topic = [b't', b'/', b'a' + i];
        // SUBSCRIBE (packet id i + 1) at QoS 0 on B, then PUBLISH at QoS 0 on A.
        let mut sub = vec![0x82, 8, 0, i + 1, 0, 3];
        sub.extend_from_slice(&topic);
        sub.push(0);
        let mut publish = vec![0x30, 6, 0, 3];
        publish.extend_from_slice(&topic);
        publish.push(b'x');
        b.write_all(&sub).await.unwrap();
        a.write_all(&publish).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        let got = 'wait: loop {
            while let Some(p) = decoder.decode(&mut buf).unwrap() {
                if let Packet::Publish(p) = p {
                    assert_eq!(p.topic.as_str().as_bytes(), topic);
                    break 'wait true;
                }
            }
            match tokio::time::timeout_at(deadline, b.read_buf(&mut buf)).await {
                Ok(n) => assert!(n.unwrap() > 0, "B's connection closed"),
                Err(_) => break false,
            }
        };
        if !got {
            missed.push(i);
        }
    }
    assert!(
        missed.is_empty(),
        "B missed the messages of rounds {missed:?}"
    );
    running.shutdown().await;
}

struct Stamp;

impl mqtt_broker::Hooks for Stamp {
    fn intercept_publish(
        &mut self,
        client_id: &str,
        p: &mut mqtt_proto::Publish,
    ) -> mqtt_broker::PublishDecision {
        p.payload = format!("{client_id}:{}", String::from_utf8_lossy(&p.payload)).into();
        mqtt_broker::PublishDecision::Accept
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedding_hooks_events_and_server_publish() {
    let text = "[[listener]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n";
    let (tx, mut events) = tokio::sync::mpsc::channel(64);
    let running = adapter_tokio::server::start_with(
        Config::parse(&format!("{text}\n[persistence]\nenabled = false\n")).unwrap(),
        Some(Box::new(Stamp)),
        Some(tx),
    )
    .await
    .unwrap();
    let addr = running.local_addrs[0].to_string();
    let (c, mut rx) = Client::connect(ClientOptions::new(&addr, "me"))
        .await
        .unwrap();
    c.subscribe("t", QoS::AtMostOnce).await.unwrap();
    c.publish("t", "hi", QoS::AtLeastOnce, false).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], b"me:hi");
    running
        .publish(mqtt_proto::Publish::new(
            mqtt_proto::TopicName::new("t").unwrap(),
            "from the app",
        ))
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], b"from the app");
    let first = events.recv().await.unwrap();
    assert!(
        matches!(first, mqtt_broker::BrokerEvent::ClientConnected { .. }),
        "{first:?}"
    );
    c.disconnect().await;
    running.shutdown().await;
}
