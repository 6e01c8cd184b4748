//! The smol broker with its async client: every transport, on smol's and (feature
//! `async-std`) async-std's executor; durable state across a restart; the metrics
//! endpoint; the binaries stopping on SIGTERM. (The transport-by-transport behaviour is
//! the scenario suite's: `tests/tests/scenarios_smol.rs`, `scenarios_async_std.rs`.)

use adapter_smol::client::{Client, ClientOptions};
use adapter_smol::server::{start, Running};
use adapter_smol::Spawner;
use async_io::Timer;
use futures_lite::future;
use mqtt_adapter_common::config::Config;
use mqtt_proto::{ProtocolVersion, Publish, QoS};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("mqtt-smol-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

async fn recv(rx: &async_channel::Receiver<Publish>) -> Publish {
    future::or(
        async { rx.recv().await.expect("the client is running") },
        async {
            Timer::after(WAIT).await;
            panic!("no message within {WAIT:?}")
        },
    )
    .await
}

/// A CA, and a certificate for localhost it signed: the server's files and the
/// client's configuration.
fn certificates(dir: &std::path::Path) -> Arc<rustls::ClientConfig> {
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
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(mqtt_adapter_common::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn every_transport(spawner: Spawner, name: &str) {
    let dir = scratch(name);
    let tls = certificates(&dir);
    let d = dir.display();
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"tls\"\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"wss\"\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n\
         [sys]\ninterval_secs = 0\n[persistence]\nenabled = false\n"
    );
    let b = start(Config::parse(&text).unwrap(), None, spawner.clone())
        .await
        .unwrap();
    let p: Vec<u16> = b.local_addrs.iter().map(|a| a.port()).collect();
    let addresses = [
        format!("mqtt://127.0.0.1:{}", p[0]),
        format!("mqtts://localhost:{}", p[1]),
        format!("ws://127.0.0.1:{}/mqtt", p[2]),
        format!("wss://localhost:{}/mqtt", p[3]),
    ];
    for (i, address) in addresses.iter().enumerate() {
        for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let mut o = ClientOptions::new(address, &format!("c{i}-{v}"));
            o.version = v;
            o.tls = Some((tls.clone(), "localhost".into()));
            let (c, rx) = Client::connect_on(o, spawner.clone()).await.unwrap();
            let topic = format!("t/{i}/{v}");
            c.subscribe(&topic, QoS::ExactlyOnce).await.unwrap();
            // Larger than a TLS record and than a read: it spans both.
            let big = vec![3u8; 100_000];
            for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                c.publish(&topic, big.clone(), q, false).await.unwrap();
                let m = recv(&rx).await;
                assert_eq!((m.payload.len(), m.qos), (big.len(), q), "{address} {v}");
            }
            c.disconnect().await;
            assert!(
                rx.recv().await.is_err(),
                "the channel ends with the connection"
            );
        }
    }
    b.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_transport_on_smol() {
    smol::block_on(every_transport(Spawner::smol(), "smol"));
}

#[cfg(feature = "async-std")]
#[test]
fn every_transport_on_async_std() {
    async_std::task::block_on(every_transport(Spawner::async_std(), "async-std"));
}

async fn broker(extra: &str) -> Running {
    let text = format!("[[listener]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n{extra}\n");
    start(Config::parse(&text).unwrap(), None, Spawner::smol())
        .await
        .unwrap()
}

#[test]
fn state_survives_a_restart() {
    smol::block_on(async {
        let dir = scratch("persist");
        let extra = format!("[persistence]\ndir = \"{}\"\n", dir.join("data").display());
        for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let options = |b: &Running, id: &str| {
                let mut o = ClientOptions::new(&b.local_addrs[0].to_string(), id);
                o.version = v;
                o
            };
            let b = broker(&extra).await;
            let (sub, _) = Client::connect(options(&b, "sub")).await.unwrap();
            sub.subscribe("p/#", QoS::ExactlyOnce).await.unwrap();
            sub.disconnect().await;
            let (publisher, _) = Client::connect(options(&b, "pub")).await.unwrap();
            publisher
                .publish("p/x", "queued", QoS::ExactlyOnce, false)
                .await
                .unwrap();
            publisher.disconnect().await;
            b.shutdown().await;

            let b = broker(&extra).await;
            let (sub, rx) = Client::connect(options(&b, "sub")).await.unwrap();
            assert!(sub.session_present());
            assert_eq!(&recv(&rx).await.payload[..], b"queued");
            sub.disconnect().await;
            b.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(dir);
    });
}

#[test]
fn metrics_endpoint() {
    smol::block_on(async {
        let b = broker("[metrics]\nbind = \"127.0.0.1:0\"\n[persistence]\nenabled = false").await;
        let (c, _) = Client::connect(ClientOptions::new(&b.local_addrs[0].to_string(), "m"))
            .await
            .unwrap();
        let addr = b.metrics_addr.unwrap();
        let text = blocking::unblock(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        })
        .await;
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(text.contains("\nmqtt_connections 1\n"), "{text}");
        c.disconnect().await;
        b.shutdown().await;
    });
}

fn binary_serves_and_stops_on_sigterm(bin: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(bin)
        .args(["-p", &port.to_string(), "--no-persistence"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    smol::block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        let (c, _) = loop {
            match Client::connect(ClientOptions::new(&format!("127.0.0.1:{port}"), "bin")).await {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    Timer::after(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{bin} did not come up: {e}"),
            }
        };
        c.publish("x", "y", QoS::AtLeastOnce, false).await.unwrap();
    });
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{bin}: exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "{bin} did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_smol_binary_stops_on_sigterm() {
    binary_serves_and_stops_on_sigterm(env!("CARGO_BIN_EXE_mqtt-broker-smol"));
}

#[cfg(feature = "async-std")]
#[test]
fn the_async_std_binary_stops_on_sigterm() {
    binary_serves_and_stops_on_sigterm(env!("CARGO_BIN_EXE_mqtt-broker-async-std"));
}
