//! The broker over every transport: TCP, TLS (certificates made at test time), WebSocket
//! with the `mqtt` subprotocol, and WSS. The client side is an mqtt-session client
//! connection driven over the real socket.

use adapter_tokio::config::Config;
use adapter_tokio::server::start;
use futures_util::{SinkExt, StreamExt};
use mqtt_proto::*;
use mqtt_session::{Config as SessionConfig, Connection, Event};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A client session over a byte stream: connect, subscribe, publish QoS 1 to itself,
/// receive it.
async fn round_trip_stream<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, version: ProtocolVersion) {
    let mut c = Connection::client(SessionConfig::default());
    let mut events = vec![];
    c.connect(
        Instant::now(),
        Connect::new(version, MqttString::new("t").unwrap()),
    )
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut step = 0;
    loop {
        if let Some(b) = c.poll_transmit() {
            s.write_all(&b).await.unwrap();
        }
        while let Some(e) = c.poll_event() {
            events.push(e);
        }
        if step == 0 && c.is_open() {
            step = 1;
            c.subscribe(
                Instant::now(),
                vec![Subscription {
                    filter: TopicFilter::new("x/#").unwrap(),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..Default::default()
                    },
                }],
                Default::default(),
            )
            .unwrap();
            continue;
        }
        if step == 1 && events.iter().any(|e| matches!(e, Event::SubAck(_))) {
            step = 2;
            let mut p = Publish::new(TopicName::new("x/y").unwrap(), "over the wire");
            p.qos = QoS::AtLeastOnce;
            c.publish(Instant::now(), p).unwrap();
            continue;
        }
        if events
            .iter()
            .any(|e| matches!(e, Event::Message(m) if &m.payload[..] == b"over the wire"))
        {
            return;
        }
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("round trip in time")
            .unwrap();
        assert!(n > 0, "broker closed the connection: {events:?}");
        c.handle_input(Instant::now(), &buf[..n]);
    }
}

/// The same over WebSocket: every write is one binary frame.
async fn round_trip_ws<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    url: &str,
    version: ProtocolVersion,
) {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, s).await.unwrap();
    assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], "mqtt");
    let mut c = Connection::client(SessionConfig::default());
    c.connect(
        Instant::now(),
        Connect::new(version, MqttString::new("w").unwrap()),
    )
    .unwrap();
    let mut events = vec![];
    let mut step = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(b) = c.poll_transmit() {
            // Split each batch in two frames: MQTT packets may span frames.
            let mid = b.len() / 2;
            ws.send(Message::Binary(b.slice(..mid))).await.unwrap();
            ws.send(Message::Binary(b.slice(mid..))).await.unwrap();
        }
        while let Some(e) = c.poll_event() {
            events.push(e);
        }
        if step == 0 && c.is_open() {
            step = 1;
            let mut p = Publish::new(TopicName::new("ws/y").unwrap(), "frames");
            p.qos = QoS::AtLeastOnce;
            c.subscribe(
                Instant::now(),
                vec![Subscription {
                    filter: TopicFilter::new("ws/#").unwrap(),
                    options: SubscriptionOptions::default(),
                }],
                Default::default(),
            )
            .unwrap();
            c.publish(Instant::now(), p).unwrap();
            continue;
        }
        if events
            .iter()
            .any(|e| matches!(e, Event::Message(m) if &m.payload[..] == b"frames"))
        {
            return;
        }
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("in time")
            .expect("open")
            .unwrap();
        if let Message::Binary(b) = msg {
            c.handle_input(Instant::now(), &b);
        }
    }
}

struct Pki {
    dir: std::path::PathBuf,
    ca: CertificateDer<'static>,
    /// A client certificate (CN "device-7") and key signed by the CA.
    client: (
        CertificateDer<'static>,
        rustls_pki_types::PrivateKeyDer<'static>,
    ),
}

fn pki() -> Pki {
    let dir = std::env::temp_dir().join(format!(
        "mqtt-tls-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client_params = rcgen::CertificateParams::new(vec![]).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "device-7");
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();
    Pki {
        dir,
        ca: ca.der().clone(),
        client: (
            client_cert.der().clone(),
            rustls_pki_types::PrivateKeyDer::Pkcs8(client_key.serialize_der().into()),
        ),
    }
}

fn tls_client(ca: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_round_trips() {
    let pki = pki();
    let (cert, key) = (pki.dir.join("cert.pem"), pki.dir.join("key.pem"));
    let text = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
[[listener]]
bind = "127.0.0.1:0"
protocol = "tls"
cert = "{c}"
key = "{k}"
[[listener]]
bind = "127.0.0.1:0"
protocol = "ws"
[[listener]]
bind = "127.0.0.1:0"
protocol = "wss"
cert = "{c}"
key = "{k}"
[sys]
interval_secs = 0
"#,
        c = cert.display(),
        k = key.display()
    );
    let running = start(
        Config::parse(&format!("{text}\n[persistence]\nenabled = false\n")).unwrap(),
        None,
    )
    .await
    .unwrap();
    let a = running.local_addrs.clone();
    let connector = tls_client(&pki.ca);
    let name = ServerName::try_from("localhost").unwrap();
    for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        round_trip_stream(TcpStream::connect(a[0]).await.unwrap(), v).await;
        let tls = connector
            .connect(name.clone(), TcpStream::connect(a[1]).await.unwrap())
            .await
            .unwrap();
        round_trip_stream(tls, v).await;
        let url = format!("ws://{}/mqtt", a[2]);
        round_trip_ws(TcpStream::connect(a[2]).await.unwrap(), &url, v).await;
        let tls = connector
            .connect(name.clone(), TcpStream::connect(a[3]).await.unwrap())
            .await
            .unwrap();
        let url = format!("wss://localhost:{}/mqtt", a[3].port());
        round_trip_ws(tls, &url, v).await;
    }
    // A WebSocket request for another path is refused.
    let mut req = format!("ws://{}/other", a[2])
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    assert!(
        tokio_tungstenite::client_async(req, TcpStream::connect(a[2]).await.unwrap())
            .await
            .is_err()
    );
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(pki.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_common_name_is_the_user_name() {
    let pki = pki();
    let d = pki.dir.display();
    let text = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
protocol = "tls"
cert = "{d}/cert.pem"
key = "{d}/key.pem"
client_ca = "{d}/ca.pem"
use_identity_as_username = true
allow_anonymous = false
[sys]
interval_secs = 0
"#
    );
    let (tx, mut events) = tokio::sync::mpsc::channel(16);
    let running = adapter_tokio::server::start_with(
        Config::parse(&format!("{text}\n[persistence]\nenabled = false\n")).unwrap(),
        None,
        Some(tx),
    )
    .await
    .unwrap();
    let addr = running.local_addrs[0];
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![pki.client.0.clone()], pki.client.1.clone_key())
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector
        .connect(name.clone(), TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    round_trip_stream(tls, ProtocolVersion::V5).await;
    let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    match e {
        mqtt_broker::BrokerEvent::ClientConnected { username, .. } => {
            assert_eq!(username.as_deref(), Some("device-7"))
        }
        other => panic!("{other:?}"),
    }
    // Without a client certificate the handshake fails.
    let plain = tls_client(&pki.ca);
    let r = async {
        let mut s = plain.connect(name, TcpStream::connect(addr).await?).await?;
        s.write_all(b"\x10\x00").await?;
        let mut b = [0u8; 1];
        let n = s.read(&mut b).await?;
        anyhow::ensure!(n > 0, "closed");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    assert!(r.is_err(), "a client without a certificate is refused");
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(pki.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_client_over_tls_and_websocket() {
    use adapter_tokio::client::{Client, ClientOptions};
    let pki = pki();
    let d = pki.dir.display();
    let text = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
protocol = "tls"
cert = "{d}/cert.pem"
key = "{d}/key.pem"
[[listener]]
bind = "127.0.0.1:0"
protocol = "ws"
[[listener]]
bind = "127.0.0.1:0"
protocol = "wss"
cert = "{d}/cert.pem"
key = "{d}/key.pem"
[sys]
interval_secs = 0
"#
    );
    let running = start(
        Config::parse(&format!("{text}\n[persistence]\nenabled = false\n")).unwrap(),
        None,
    )
    .await
    .unwrap();
    let a = &running.local_addrs;
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let cfg = Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    for address in [
        // A bare address with TLS options is TLS, as before schemes.
        a[0].to_string(),
        format!("mqtts://localhost:{}", a[0].port()),
        format!("ws://{}/mqtt", a[1]),
        format!("ws://{}", a[1]),
        format!("wss://localhost:{}/mqtt", a[2].port()),
    ] {
        for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let mut o = ClientOptions::new(&address, "secure-client");
            o.version = v;
            o.tls = Some((cfg.clone(), "localhost".into()));
            let (c, mut rx) = Client::connect(o).await.unwrap();
            c.subscribe("s/#", QoS::ExactlyOnce).await.unwrap();
            // Larger than one read: the packet spans frames and TLS records.
            let big = vec![7u8; 100_000];
            for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                c.publish("s/1", big.clone(), q, false).await.unwrap();
                let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!((m.payload.len(), m.qos), (big.len(), q), "{address} {v}");
            }
            c.disconnect().await;
        }
    }
    // wss:// without TLS options, and a WebSocket path with no endpoint, are errors.
    let o = ClientOptions::new(&format!("wss://localhost:{}/mqtt", a[2].port()), "x");
    let e = Client::connect(o).await.err().expect("no TLS options");
    assert!(e.to_string().contains("TLS"), "{e}");
    let mut o = ClientOptions::new(&format!("ws://{}/elsewhere", a[1]), "x");
    o.reconnect = None;
    assert!(Client::connect(o).await.is_err());
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(pki.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_are_bounded() {
    use adapter_tokio::client::{Client, ClientOptions};
    // A WebSocket message is read whole before MQTT sees it: messages (and frames) are
    // bounded by twice max_packet_size, here 128 KiB.
    let text = "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\n[limits]\nmax_packet_size = 65536\n[sys]\ninterval_secs = 0\n";
    let running = start(Config::parse(text).unwrap(), None).await.unwrap();
    let addr = running.local_addrs[0];
    let url = format!("ws://{addr}/mqtt");
    let mut o = ClientOptions::new(&url, "good");
    o.reconnect = None;
    let (good, mut rx) = Client::connect(o).await.unwrap();
    good.subscribe("big/#", QoS::AtMostOnce).await.unwrap();
    // A hostile client sends 1 MB of valid small packets in one message: closed.
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(req, TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    ws.send(Message::Binary(connect_v5("flooder")))
        .await
        .unwrap();
    let connack = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    assert!(matches!(connack, Some(Ok(Message::Binary(b))) if b[0] == 0x20));
    let one = {
        let mut p = bytes::BytesMut::new();
        Packet::Publish(Publish::new(
            TopicName::new("big/x").unwrap(),
            vec![1u8; 1000],
        ))
        .encode(&mut p, ProtocolVersion::V5, MAX_PACKET_SIZE)
        .unwrap();
        p
    };
    let mut flood = Vec::new();
    while flood.len() < 1_000_000 {
        flood.extend_from_slice(&one);
    }
    let _ = ws.send(Message::Binary(flood.into())).await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the oversized message was taken");
    // None of it was routed, and the client alongside goes on; a burst of messages
    // larger than the bound together leaves it in several WebSocket messages.
    let burst: Vec<_> = (0..5)
        .map(|i| {
            let good = good.clone();
            tokio::spawn(async move {
                good.publish(
                    &format!("big/{i}"),
                    vec![7u8; 60_000],
                    QoS::AtMostOnce,
                    false,
                )
                .await
            })
        })
        .collect();
    for b in burst {
        b.await.unwrap().unwrap();
    }
    for _ in 0..5 {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.payload.len(), 60_000, "{:?}", m.topic);
    }
    good.disconnect().await;
    running.shutdown().await;
}

/// A 5.0 CONNECT, encoded.
fn connect_v5(client_id: &str) -> bytes::Bytes {
    let mut b = bytes::BytesMut::new();
    Packet::Connect(Box::new(Connect::new(
        ProtocolVersion::V5,
        MqttString::new(client_id).unwrap(),
    )))
    .encode(&mut b, ProtocolVersion::V5, MAX_PACKET_SIZE)
    .unwrap();
    b.freeze()
}
