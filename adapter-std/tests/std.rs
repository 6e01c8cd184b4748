//! The broker on blocking threads with its blocking client: publish and subscribe over
//! TCP and TLS, durable state across a restart, the metrics endpoint, and the
//! `mqtt-broker-std` binary stopping on SIGTERM. (The transport-by-transport behaviour
//! is the scenario suite's: `tests/tests/scenarios_std.rs`.)

use adapter_std::client::{Client, ClientError, ClientOptions};
use adapter_std::server::{start, Running};
use mqtt_adapter_common::config::Config;
use mqtt_proto::{ProtocolVersion, QoS, ReasonCode};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("mqtt-std-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn broker(extra: &str) -> Running {
    let text = format!("[[listener]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n{extra}\n");
    let text = if extra.contains("[persistence]") {
        text
    } else {
        format!("{text}[persistence]\nenabled = false\n")
    };
    start(Config::parse(&text).unwrap(), None).unwrap()
}

fn options(address: &str, id: &str, v: ProtocolVersion) -> ClientOptions {
    let mut o = ClientOptions::new(address, id);
    o.version = v;
    o
}

#[test]
fn publish_subscribe_each_qos_and_version() {
    let b = broker("");
    let addr = format!("mqtt://{}", b.local_addrs[0]);
    for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let (sub, mut messages) = Client::connect(options(&addr, &format!("sub-{v}"), v)).unwrap();
        assert_eq!(
            sub.subscribe("q/#", QoS::ExactlyOnce).unwrap(),
            ReasonCode::GrantedQoS2
        );
        let (publisher, _) = Client::connect(options(&addr, &format!("pub-{v}"), v)).unwrap();
        for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            publisher
                .publish("q/x", format!("{q:?}"), q, false)
                .unwrap();
        }
        let got: Vec<_> = (&mut messages)
            .take(3)
            .map(|m| (String::from_utf8_lossy(&m.payload).into_owned(), m.qos))
            .collect();
        assert_eq!(
            got,
            [
                ("AtMostOnce".to_string(), QoS::AtMostOnce),
                ("AtLeastOnce".to_string(), QoS::AtLeastOnce),
                ("ExactlyOnce".to_string(), QoS::ExactlyOnce),
            ]
        );
        sub.unsubscribe("q/#").unwrap();
        publisher.disconnect();
        sub.disconnect();
        // The iterator ends with the connection.
        assert!(messages.next_timeout(WAIT).is_none());
        assert!(matches!(
            sub.publish("q/x", "late", QoS::AtMostOnce, false),
            Err(ClientError::Closed)
        ));
    }
    b.shutdown();
}

#[test]
fn tls_with_the_blocking_client() {
    let dir = scratch("tls");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"tls\"\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n\
         [sys]\ninterval_secs = 0\n[persistence]\nenabled = false\n",
        d = dir.display()
    );
    let b = start(Config::parse(&text).unwrap(), None).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(mqtt_adapter_common::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = format!("mqtts://localhost:{}", b.local_addrs[0].port());
    let mut o = options(&addr, "tls", ProtocolVersion::V5);
    o.tls = Some((Arc::new(tls), "localhost".into()));
    let (c, messages) = Client::connect(o).unwrap();
    c.subscribe("t", QoS::AtLeastOnce).unwrap();
    // Larger than a TLS record: the message spans records and reads.
    let big = vec![7u8; 100_000];
    c.publish("t", big.clone(), QoS::AtLeastOnce, false)
        .unwrap();
    let m = messages.next_timeout(WAIT).expect("the message");
    assert_eq!(m.payload.len(), big.len());
    c.disconnect();
    b.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn state_survives_a_restart() {
    let dir = scratch("persist");
    let extra = format!("[persistence]\ndir = \"{}\"\n", dir.join("data").display());
    for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let b = broker(&extra);
        let addr = b.local_addrs[0].to_string();
        let (sub, _) = Client::connect(options(&addr, &format!("sub-{v}"), v)).unwrap();
        sub.subscribe("p/#", QoS::ExactlyOnce).unwrap();
        sub.disconnect();
        let (publisher, _) = Client::connect(options(&addr, &format!("pub-{v}"), v)).unwrap();
        publisher
            .publish("p/x", "queued", QoS::ExactlyOnce, false)
            .unwrap();
        publisher
            .publish("p/r", "retained", QoS::AtLeastOnce, true)
            .unwrap();
        publisher.disconnect();
        b.shutdown();

        let b = broker(&extra);
        let addr = b.local_addrs[0].to_string();
        let (sub, messages) = Client::connect(options(&addr, &format!("sub-{v}"), v)).unwrap();
        assert!(sub.session_present());
        let m = messages.next_timeout(WAIT).expect("the queued message");
        assert_eq!(&m.payload[..], b"queued");
        sub.disconnect();
        let (other, messages) = Client::connect(options(&addr, &format!("o-{v}"), v)).unwrap();
        other.subscribe("p/r", QoS::AtLeastOnce).unwrap();
        let m = messages.next_timeout(WAIT).expect("the retained message");
        assert!(m.retain && &m.payload[..] == b"retained");
        other.disconnect();
        b.shutdown();
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn metrics_endpoint() {
    let b = broker("[metrics]\nbind = \"127.0.0.1:0\"\n");
    let (c, _) = Client::connect(options(
        &b.local_addrs[0].to_string(),
        "m",
        ProtocolVersion::V5,
    ))
    .unwrap();
    let mut s = std::net::TcpStream::connect(b.metrics_addr.unwrap()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("\nmqtt_connections 1\n"), "{text}");
    assert!(b.metrics().unwrap().contains("mqtt_connections_total 1"));
    c.disconnect();
    b.shutdown();
}

#[test]
fn the_binary_serves_and_stops_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mqtt-broker-std"))
        .args(["-p", &port.to_string(), "--no-persistence"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (c, _) = loop {
        match Client::connect(options(
            &format!("127.0.0.1:{port}"),
            "bin",
            ProtocolVersion::V5,
        )) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the binary did not come up: {e}"),
        }
    };
    c.publish("x", "y", QoS::AtLeastOnce, false).unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dropping_the_client_disconnects() {
    let b = broker("");
    let (c, _messages) = Client::connect(options(
        &b.local_addrs[0].to_string(),
        "dropped",
        ProtocolVersion::V5,
    ))
    .unwrap();
    let again = c.clone();
    drop(c);
    again
        .publish("still", "here", QoS::AtLeastOnce, false)
        .unwrap();
    drop(again);
    let deadline = Instant::now() + WAIT;
    while b.gauges().unwrap().connections > 0 {
        assert!(Instant::now() < deadline, "still connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    b.shutdown();
}
