//! Who gets in, and what they may do, seen from clients over real sockets against the
//! tokio broker started in-process on 127.0.0.1 (ephemeral ports): passwords (refused
//! with the right CONNACK code and never logged), anonymous access per listener, each
//! kind of ACL rule on publish and subscribe with `%u` and `%c`, and TLS (plaintext on a
//! TLS port, silent handshakes, required client certificates).
//!
//! Password checks compare in constant time (argon2's `verify_password` compares the
//! hash outputs with `subtle`), cost the same for unknown users (see
//! `adapter_tokio::auth`), and run on blocking threads, a few at a time, never on the
//! core's task (see `adapter_tokio::server`).

use adapter_tokio::client::{Client, ClientError, ClientOptions};
use adapter_tokio::config::Config;
use adapter_tokio::server::{start, Running};
use mqtt_proto::{Decoder, ProtocolVersion, Publish, QoS, ReasonCode};
use mqtt_tests::raw::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::Receiver;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// A directory of its own for one test's files.
fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mqtt-security-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A password file with these users.
fn passwd(dir: &std::path::Path, users: &[(&str, &str)]) -> PathBuf {
    let mut p = adapter_tokio::auth::Passwords::default();
    for (u, pw) in users {
        p.set(u, pw).unwrap();
    }
    let path = dir.join("passwd");
    std::fs::write(&path, p.to_text()).unwrap();
    path
}

async fn broker(text: &str) -> Running {
    logs();
    start(
        Config::parse(&format!("{text}\n[persistence]\nenabled = false\n")).unwrap(),
        None,
    )
    .await
    .unwrap()
}

/// Connects with the async client (a new session, no reconnecting).
async fn client(
    addr: SocketAddr,
    v: ProtocolVersion,
    id: &str,
    credentials: Option<(&str, &str)>,
) -> anyhow::Result<(Client, Receiver<Publish>)> {
    let mut o = ClientOptions::new(&addr.to_string(), id);
    o.version = v;
    o.reconnect = None;
    o.clean_start = true;
    o.credentials = credentials.map(|(u, p)| (u.to_string(), p.as_bytes().to_vec()));
    Client::connect(o).await
}

/// The next message, within [`LIMIT`].
async fn next(rx: &mut Receiver<Publish>) -> Publish {
    tokio::time::timeout(LIMIT, rx.recv())
        .await
        .expect("a message in time")
        .expect("still connected")
}

/// A raw CONNECT with credentials, and how the broker answered and closed.
async fn refused_raw(addr: SocketAddr, v: ProtocolVersion, user: &str, pw: &str) -> (Closed, Who) {
    let mut raw = Raw::open(addr).await;
    raw.decoder = Decoder::client(v);
    raw.send(&connect_with_credentials(v, "raw", user, pw))
        .await;
    let who = raw.who.clone();
    (raw.closed().await, who)
}

// ----- Passwords --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_and_never_logged() {
    let d = dir("password");
    let passwd = passwd(&d, &[("alice", "correct horse")]);
    let running = broker(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[auth]\npassword_file = \"{}\"\n[sys]\ninterval_secs = 0\n",
        passwd.display()
    ))
    .await;
    let addr = running.local_addrs[0];
    // A wrong password and an unknown user get the same answer (nothing tells which
    // users exist), then the connection is closed (3.1.1 [MQTT-3.2.2-5],
    // 5.0 [MQTT-3.2.2-7]): 3.1.1 return code 4, 5.0 0x86 Bad User Name or Password.
    for (user, pw) in [("alice", "battery staple"), ("mallory", "battery staple")] {
        let (closed, who) = refused_raw(addr, V3, user, pw).await;
        assert_eq!(closed.bytes, [0x20, 0x02, 0x00, 0x04], "{user} 3.1.1");
        let (closed, _) = refused_raw(addr, V5, user, pw).await;
        assert_eq!(
            closed.reason(),
            Some(ReasonCode::BadUserNameOrPassword),
            "{user}"
        );
        assert_eq!(&closed.bytes[..4], [0x20, 0x03, 0x00, 0x86], "{user} 5.0");
        // Logged with who, from where and as whom; never with the password.
        let [listener, peer] = who.needles();
        let line = logs()
            .line(&["authentication failed", &listener, &peer])
            .await;
        assert!(line.contains(&format!("username={user}")), "{line}");
        let line = who.log_line().await;
        assert!(line.contains("BadUserNameOrPassword (0x86)"), "{line}");
    }
    // The async client sees the refusal as such.
    let err = client(addr, V5, "c", Some(("alice", "wrong")))
        .await
        .err()
        .expect("refused");
    assert!(matches!(
        err.downcast_ref::<ClientError>(),
        Some(ClientError::ConnectRefused(
            ReasonCode::BadUserNameOrPassword
        ))
    ));
    // The right one gets in.
    let (c, _) = client(addr, V3, "c", Some(("alice", "correct horse")))
        .await
        .unwrap();
    c.disconnect().await;
    let text = logs().text();
    for pw in ["battery staple", "correct horse", "wrong"] {
        assert!(!text.contains(pw), "the password {pw:?} was logged");
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_are_refused_where_configured() {
    let d = dir("anonymous");
    let passwd = passwd(&d, &[("alice", "correct horse")]);
    // A listener closed to anonymous clients, and one on loopback that is open to them
    // by default.
    let running = broker(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nallow_anonymous = false\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         [auth]\npassword_file = \"{}\"\n[sys]\ninterval_secs = 0\n",
        passwd.display()
    ))
    .await;
    let (closed_to, open_to) = (running.local_addrs[0], running.local_addrs[1]);
    // 3.1.1: return code 5 Not authorized; 5.0: 0x87.
    let mut raw = Raw::open(closed_to).await;
    raw.send(&connect_packet(b"MQTT", 4, "anon", 60)).await;
    let who = raw.who.clone();
    assert_eq!(raw.closed().await.bytes, [0x20, 0x02, 0x00, 0x05]);
    let line = who.log_line().await;
    assert!(line.contains("NotAuthorized (0x87)"), "{line}");
    let mut raw = Raw::open(closed_to).await;
    raw.decoder = Decoder::client(V5);
    raw.send(&connect_packet(b"MQTT", 5, "anon", 60)).await;
    assert_eq!(raw.closed().await.reason(), Some(ReasonCode::NotAuthorized));
    // With credentials: in.
    let (c, _) = client(closed_to, V5, "alice", Some(("alice", "correct horse")))
        .await
        .unwrap();
    c.disconnect().await;
    // The other listener lets anonymous clients in.
    for v in [V3, V5] {
        let (c, _) = client(open_to, v, "anon", None).await.unwrap();
        c.disconnect().await;
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(d);
}

// ----- ACL --------------------------------------------------------------------------------

/// The ACL of the rule-kind tests: one rule (or pair) per kind.
const ACL: &str = "\
# %u: a user's own tree
allow both      any            users/%u/#
deny  both      any            users/#
# %c: a client's own tree
allow both      any            clients/%c/#
deny  both      any            clients/#
# user:NAME, publish only
deny  publish   user:guest     #
# client:ID, subscribe only
allow subscribe client:monitor $SYS/#
deny  subscribe any            $SYS/#
# anonymous
deny  both      anonymous      private/#
default allow
";

/// A broker with [`ACL`], users alice, bob and guest (password `pw`), `$SYS` every
/// second.
async fn acl_broker(tag: &str, acl: &str) -> (Running, SocketAddr, PathBuf) {
    let d = dir(tag);
    let passwd = passwd(&d, &[("alice", "pw"), ("bob", "pw"), ("guest", "pw")]);
    let acl_path = d.join("acl");
    std::fs::write(&acl_path, acl).unwrap();
    let running = broker(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\
         [auth]\npassword_file = \"{}\"\nacl_file = \"{}\"\n[sys]\ninterval_secs = 1\n",
        passwd.display(),
        acl_path.display()
    ))
    .await;
    let addr = running.local_addrs[0];
    (running, addr, d)
}

/// A denied publish: 5.0 QoS 1 is answered 0x87 Not authorized; 3.1.1 cannot say no and
/// is acknowledged, but either way the message goes nowhere. `spy` is subscribed to
/// `denied` and to `marker`, which the publisher may publish to: the marker, published
/// after the denied message, is the next thing the spy gets.
async fn assert_publish_denied(
    publisher: &Client,
    v: ProtocolVersion,
    denied: &str,
    marker: &str,
    spy: &mut Receiver<Publish>,
) {
    let r = publisher
        .publish(denied, "denied", QoS::AtLeastOnce, false)
        .await;
    if v.is_v5() {
        assert!(
            matches!(r, Err(ClientError::Refused(ReasonCode::NotAuthorized))),
            "{denied}: {r:?}"
        );
    } else {
        assert!(r.is_ok(), "{denied}: {r:?}");
    }
    publisher
        .publish(marker, "marker", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = next(spy).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        (marker, &b"marker"[..]),
        "{denied} was delivered"
    );
}

/// Subscribing is refused with 0x80 (both versions; `subscribe_denied_code`).
async fn assert_subscribe_denied(c: &Client, filter: &str) {
    let code = c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    assert_eq!(code, ReasonCode::UnspecifiedError, "{filter}");
}

async fn assert_subscribe_granted(c: &Client, filter: &str) {
    let code = c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    assert_eq!(code, ReasonCode::GrantedQoS1, "{filter}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_name_substitution() {
    let (running, addr, d) = acl_broker("acl-u", ACL).await;
    for v in [V3, V5] {
        let (alice, mut alice_rx) = client(addr, v, "a1", Some(("alice", "pw"))).await.unwrap();
        let (bob, mut bob_rx) = client(addr, v, "b1", Some(("bob", "pw"))).await.unwrap();
        // Her own tree: publish and subscribe.
        assert_subscribe_granted(&alice, "users/alice/#").await;
        alice
            .publish("users/alice/x", "mine", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(&next(&mut alice_rx).await.payload[..], b"mine");
        // Not bob's: neither publish nor subscribe, nor a wildcard reaching into it.
        assert_subscribe_granted(&bob, "users/bob/#").await;
        assert_subscribe_granted(&bob, "news").await;
        assert_publish_denied(&alice, v, "users/bob/x", "news", &mut bob_rx).await;
        assert_subscribe_denied(&alice, "users/bob/#").await;
        assert_subscribe_denied(&alice, "users/+/x").await;
        assert_subscribe_denied(&alice, "users/#").await;
        // A wildcard that no rule denies whole is granted, but nothing of bob's tree
        // reaches it: each message is checked for its own topic.
        assert_subscribe_granted(&alice, "#").await;
        bob.publish("users/bob/x", "bob's", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        bob.publish("news", "marker", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        let m = next(&mut alice_rx).await;
        assert_eq!(
            (m.topic.as_str(), &m.payload[..]),
            ("news", &b"marker"[..]),
            "users/bob/x reached alice's #"
        );
        // A rule with %u does not apply without a user name: the deny below it does.
        let (anon, _) = client(addr, v, "anon1", None).await.unwrap();
        assert_subscribe_denied(&anon, "users/alice/#").await;
        for c in [alice, bob, anon] {
            c.disconnect().await;
        }
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_client_id_substitution() {
    let (running, addr, d) = acl_broker("acl-c", ACL).await;
    for v in [V3, V5] {
        let (dev1, mut dev1_rx) = client(addr, v, "dev1", None).await.unwrap();
        assert_subscribe_granted(&dev1, "clients/dev1/#").await;
        assert_subscribe_granted(&dev1, "news").await;
        dev1.publish("clients/dev1/up", "mine", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(&next(&mut dev1_rx).await.payload[..], b"mine");
        let (dev2, _) = client(addr, v, "dev2", None).await.unwrap();
        assert_publish_denied(&dev2, v, "clients/dev1/up", "news", &mut dev1_rx).await;
        assert_subscribe_denied(&dev2, "clients/dev1/#").await;
        assert_subscribe_denied(&dev2, "clients/+/up").await;
        // A client id that looks like a wildcard, or holds a `/`, is only itself: it
        // does not widen `clients/%c/#` to other clients' topics.
        for id in ["#", "+", "dev1/x"] {
            let (sneaky, _) = client(addr, v, id, None).await.unwrap();
            assert_subscribe_denied(&sneaky, "clients/#").await;
            assert_subscribe_denied(&sneaky, "clients/+/up").await;
            assert_subscribe_denied(&sneaky, "clients/dev1/#").await;
            assert_publish_denied(&sneaky, v, "clients/dev1/up", "news", &mut dev1_rx).await;
            if id == "dev1/x" {
                assert_publish_denied(&sneaky, v, "clients/dev1/x/up", "news", &mut dev1_rx).await;
            }
            sneaky.disconnect().await;
        }
        dev1.disconnect().await;
        dev2.disconnect().await;
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_rule_for_publish_only() {
    let (running, addr, d) = acl_broker("acl-user", ACL).await;
    for v in [V3, V5] {
        // `deny publish user:guest #`: guest reads news but cannot write any.
        let (guest, mut guest_rx) = client(addr, v, "g1", Some(("guest", "pw"))).await.unwrap();
        let (alice, _) = client(addr, v, "a1", Some(("alice", "pw"))).await.unwrap();
        assert_subscribe_granted(&guest, "news").await;
        alice
            .publish("news", "from alice", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(&next(&mut guest_rx).await.payload[..], b"from alice");
        let (reader, mut reader_rx) = client(addr, v, "r1", None).await.unwrap();
        assert_subscribe_granted(&reader, "news").await;
        assert_subscribe_granted(&reader, "marker").await;
        let r = guest
            .publish("news", "from guest", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(v.is_v5(), r.is_err(), "{r:?}");
        alice
            .publish("marker", "marker", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        let m = next(&mut reader_rx).await;
        assert_eq!(m.topic.as_str(), "marker", "{v}: {m:?}");
        for c in [guest, alice, reader] {
            c.disconnect().await;
        }
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_client_rule_for_subscribe_only() {
    let (running, addr, d) = acl_broker("acl-client", ACL).await;
    for v in [V3, V5] {
        // `allow subscribe client:monitor $SYS/#` before `deny subscribe any $SYS/#`.
        let (monitor, mut monitor_rx) = client(addr, v, "monitor", None).await.unwrap();
        assert_subscribe_granted(&monitor, "$SYS/#").await;
        let m = next(&mut monitor_rx).await;
        assert!(m.topic.starts_with("$SYS/"), "{m:?}");
        let (other, _) = client(addr, v, "other", Some(("alice", "pw")))
            .await
            .unwrap();
        assert_subscribe_denied(&other, "$SYS/#").await;
        assert_subscribe_denied(&other, "$SYS/broker/uptime").await;
        monitor.disconnect().await;
        other.disconnect().await;
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_anonymous_rule() {
    let (running, addr, d) = acl_broker("acl-anon", ACL).await;
    for v in [V3, V5] {
        // `deny both anonymous private/#`: a client with a user name is not anonymous.
        let (alice, mut alice_rx) = client(addr, v, "a1", Some(("alice", "pw"))).await.unwrap();
        assert_subscribe_granted(&alice, "private/#").await;
        assert_subscribe_granted(&alice, "news").await;
        let (anon, _) = client(addr, v, "anon", None).await.unwrap();
        assert_subscribe_denied(&anon, "private/#").await;
        assert_publish_denied(&anon, v, "private/x", "news", &mut alice_rx).await;
        alice
            .publish("private/x", "hers", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(&next(&mut alice_rx).await.payload[..], b"hers");
        alice.disconnect().await;
        anon.disconnect().await;
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_default_deny() {
    let acl = "allow both user:alice a/#\nallow subscribe any marker\nallow publish user:alice marker\ndefault deny\n";
    let (running, addr, d) = acl_broker("acl-default", acl).await;
    for v in [V3, V5] {
        let (alice, mut alice_rx) = client(addr, v, "a1", Some(("alice", "pw"))).await.unwrap();
        assert_subscribe_granted(&alice, "a/#").await;
        assert_subscribe_granted(&alice, "marker").await;
        assert_subscribe_denied(&alice, "b/#").await;
        alice
            .publish("a/x", "ok", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(&next(&mut alice_rx).await.payload[..], b"ok");
        // No rule for bob: the default denies.
        let (bob, _) = client(addr, v, "b1", Some(("bob", "pw"))).await.unwrap();
        assert_subscribe_denied(&bob, "a/#").await;
        let r = bob.publish("a/x", "no", QoS::AtLeastOnce, false).await;
        assert_eq!(v.is_v5(), r.is_err(), "{r:?}");
        alice
            .publish("marker", "marker", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(next(&mut alice_rx).await.topic.as_str(), "marker");
        alice.disconnect().await;
        bob.disconnect().await;
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(d);
}

// ----- TLS --------------------------------------------------------------------------------

/// A CA, a server certificate for localhost and 127.0.0.1 signed by it, a client
/// certificate signed by it, and a client certificate signed by another CA.
struct Pki {
    dir: PathBuf,
    ca: CertificateDer<'static>,
    client: (CertificateDer<'static>, PrivateKeyDer<'static>),
    rogue_client: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert, rcgen::Issuer::new(params, key))
}

fn client_cert(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    cn: &str,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.signed_by(&key, issuer).unwrap();
    (
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

fn pki(tag: &str) -> Pki {
    let dir = dir(tag);
    let (ca_cert, issuer) = ca("test CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let (_, rogue) = ca("rogue CA");
    Pki {
        client: client_cert(&issuer, "device-1"),
        rogue_client: client_cert(&rogue, "device-1"),
        ca: ca_cert.der().clone(),
        dir,
    }
}

fn tls_config(
    pki: &Pki,
    client: Option<&(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let b = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match client {
        Some((c, k)) => b
            .with_client_auth_cert(vec![c.clone()], k.clone_key())
            .unwrap(),
        None => b.with_no_client_auth(),
    })
}

/// An MQTT client over TLS: connects, subscribes and round-trips a message.
async fn tls_round_trip(addr: SocketAddr, tls: Arc<ClientConfig>, id: &str) -> anyhow::Result<()> {
    let mut o = ClientOptions::new(&format!("mqtts://localhost:{}", addr.port()), id);
    o.reconnect = None;
    o.tls = Some((tls, "localhost".into()));
    let (c, mut rx) = Client::connect(o).await?;
    c.subscribe("tls/x", QoS::AtLeastOnce).await?;
    c.publish("tls/x", "over TLS", QoS::AtLeastOnce, false)
        .await?;
    let m = tokio::time::timeout(LIMIT, rx.recv()).await?;
    anyhow::ensure!(m.is_some_and(|m| &m.payload[..] == b"over TLS"));
    c.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_silence_on_a_tls_port() {
    let pki = pki("tls-plain");
    let d = pki.dir.display();
    let running = broker(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"tls\"\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n\
         [limits]\nconnect_timeout_secs = 1\n[sys]\ninterval_secs = 0\n"
    ))
    .await;
    let addr = running.local_addrs[0];
    let tls = tls_config(&pki, None);
    // A TLS client connected alongside the whole time.
    let mut o = ClientOptions::new(&format!("mqtts://localhost:{}", addr.port()), "good");
    o.reconnect = None;
    o.tls = Some((tls.clone(), "localhost".into()));
    let (good, mut good_rx) = Client::connect(o).await.unwrap();
    good.subscribe("ok", QoS::AtLeastOnce).await.unwrap();
    let serves = |n: u32| {
        let good = good.clone();
        async move {
            good.publish("ok", format!("{n}"), QoS::AtLeastOnce, false)
                .await
                .unwrap();
        }
    };
    // A plain MQTT CONNECT where a TLS ClientHello should be: the handshake fails, the
    // connection is closed at once (rustls answers with an alert at most), and the
    // failure is logged.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let local = s.local_addr().unwrap().to_string();
    let started = Instant::now();
    s.write_all(&connect_packet(b"MQTT", 4, "plain", 60))
        .await
        .unwrap();
    let mut got = vec![];
    let _ = tokio::time::timeout(LIMIT, s.read_to_end(&mut got))
        .await
        .expect("closed");
    let after = started.elapsed();
    assert!(got.is_empty() || got[0] == 0x15, "not a TLS alert: {got:?}");
    let line = logs()
        .line(&[
            "handshake failed",
            &format!("listener={addr} "),
            &format!("peer={local} "),
        ])
        .await;
    println!(
        "| plaintext CONNECT on a TLS port | closed, {} bytes (TLS alert) | {after:?} | {} |",
        got.len(),
        line.split_once("INFO").map_or(&line[..], |(_, l)| l).trim()
    );
    serves(1).await;
    assert_eq!(&next(&mut good_rx).await.payload[..], b"1");
    // A TCP connection that never starts the handshake: closed after the connect timeout.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let local = s.local_addr().unwrap().to_string();
    let started = Instant::now();
    let mut got = vec![];
    let _ = tokio::time::timeout(LIMIT, s.read_to_end(&mut got))
        .await
        .expect("closed");
    let after = started.elapsed();
    assert!(got.is_empty());
    assert!(
        after >= Duration::from_millis(950) && after < Duration::from_secs(3),
        "closed after {after:?}"
    );
    let line = logs()
        .line(&[
            "handshake failed",
            &format!("listener={addr} "),
            &format!("peer={local} "),
        ])
        .await;
    println!(
        "| TCP connect on a TLS port, nothing sent | closed, nothing sent | {after:?} | {} |",
        line.split_once("INFO").map_or(&line[..], |(_, l)| l).trim()
    );
    serves(2).await;
    assert_eq!(&next(&mut good_rx).await.payload[..], b"2");
    good.disconnect().await;
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_required_with_client_ca() {
    let pki = pki("tls-client-ca");
    let d = pki.dir.display();
    let running = broker(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"tls\"\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\nclient_ca = \"{d}/ca.pem\"\n\
         [sys]\ninterval_secs = 0\n"
    ))
    .await;
    let addr = running.local_addrs[0];
    // Signed by the CA: in.
    tls_round_trip(addr, tls_config(&pki, Some(&pki.client)), "signed")
        .await
        .unwrap();
    // No certificate, or one from another CA: the handshake fails (TLS 1.3 tells the
    // client after its Finished, so the refusal shows on the first read), and the
    // broker keeps serving.
    for (name, cert) in [
        ("no certificate", None),
        ("another CA's", Some(&pki.rogue_client)),
    ] {
        let seen = logs().text().len();
        let r = tls_round_trip(addr, tls_config(&pki, cert), "refused").await;
        assert!(r.is_err(), "{name}: accepted");
        let line = logs()
            .line_after(seen, &["handshake failed", &format!("listener={addr} ")])
            .await;
        println!(
            "| TLS with client_ca, {name} | refused: {} | - | {} |",
            r.unwrap_err(),
            line.split_once("INFO").map_or(&line[..], |(_, l)| l).trim()
        );
    }
    tls_round_trip(addr, tls_config(&pki, Some(&pki.client)), "signed-again")
        .await
        .unwrap();
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&pki.dir);
}
