//! The `mqtt-broker` binary itself: it starts with no configuration, serves clients,
//! checks configuration files (naming the file and key of an error), manages password
//! files, stops on SIGTERM, and reloads its TLS certificate on SIGHUP without dropping
//! connections.

use adapter_tokio::client::{Client, ClientOptions};
use mqtt_proto::QoS;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-broker");

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Broker(Child, std::path::PathBuf);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// The binary with its defaults, but its durable state in a directory of its own.
fn spawn(args: &[&str]) -> Broker {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data = std::env::temp_dir().join(format!("mqtt-bin-data-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    Broker(
        Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        data,
    )
}

async fn connect(
    port: u16,
    id: &str,
) -> (Client, tokio::sync::mpsc::Receiver<mqtt_proto::Publish>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut o = ClientOptions::new(&format!("127.0.0.1:{port}"), id);
        o.reconnect = None;
        match Client::connect(o).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("broker did not come up: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_without_configuration_and_serves() {
    let port = free_port();
    let _b = spawn(&["-p", &port.to_string()]);
    let (sub, mut rx) = connect(port, "sub").await;
    sub.subscribe("bin/#", QoS::AtLeastOnce).await.unwrap();
    let (publisher, _) = connect(port, "pub").await;
    publisher
        .publish("bin/x", "from the binary", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], b"from the binary");
}

#[test]
fn stops_on_sigterm() {
    let port = free_port();
    let mut b = spawn(&["-p", &port.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "broker did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = b.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = b.0.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "broker did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn check_config_and_passwd() {
    let dir = std::env::temp_dir().join(format!("mqtt-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Every listener type, with certificates made here.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let passwd = dir.join("passwd");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!(
            r#"
[[listener]]
bind = "127.0.0.1:1883"
[[listener]]
bind = "127.0.0.1:8883"
protocol = "tls"
cert = "{d}/cert.pem"
key = "{d}/key.pem"
[[listener]]
bind = "127.0.0.1:8080"
protocol = "ws"
[[listener]]
bind = "127.0.0.1:8443"
protocol = "wss"
cert = "{d}/cert.pem"
key = "{d}/key.pem"
[auth]
password_file = "{p}"
[metrics]
bind = "127.0.0.1:9100"
"#,
            d = dir.display(),
            p = passwd.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[limits]\nmaximum_qos = 7\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("limits.maximum_qos"),
        "{err}"
    );
    // passwd creates the file with an argon2id hash and never echoes the password.
    let out = Command::new(BIN)
        .args(["passwd"])
        .arg(&passwd)
        .args(["alice", "s3cret"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&passwd).unwrap();
    assert!(
        text.starts_with("alice:$argon2id$") && !text.contains("s3cret"),
        "{text}"
    );
    let p = adapter_tokio::auth::Passwords::load(&passwd).unwrap();
    assert!(p.verify("alice", b"s3cret"));
    let out = Command::new(BIN)
        .args(["passwd", "-D"])
        .arg(&passwd)
        .arg("alice")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(adapter_tokio::auth::Passwords::load(&passwd)
        .unwrap()
        .is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_keeps_connections() {
    use std::sync::Arc;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let dir = std::env::temp_dir().join(format!("mqtt-bin-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    // Writes a new server certificate and key; the files are replaced, not rewritten.
    let issue = |n: u32| -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("server {n}"));
        let cert = params.signed_by(&key, &issuer).unwrap();
        for (name, pem) in [("key.pem", key.serialize_pem()), ("cert.pem", cert.pem())] {
            let tmp = dir.join(format!("{name}.new"));
            std::fs::write(&tmp, pem).unwrap();
            std::fs::rename(&tmp, dir.join(name)).unwrap();
        }
        cert.der().clone()
    };
    let first = issue(1);
    let port = free_port();
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nbind = \"127.0.0.1:{port}\"\nprotocol = \"tls\"\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let b = spawn(&["-c", config.to_str().unwrap()]);
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    // The certificate a new connection is shown.
    let shown = || {
        let tls = tls.clone();
        async move {
            let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            let s = tokio_rustls::TlsConnector::from(tls)
                .connect(ServerName::try_from("localhost").unwrap(), s)
                .await
                .ok()?;
            s.get_ref().1.peer_certificates()?.first().cloned()
        }
    };
    // A client connected before the reload.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (c, mut rx) = loop {
        let mut o = ClientOptions::new(&format!("mqtts://localhost:{port}"), "before");
        o.reconnect = None;
        o.tls = Some((tls.clone(), "localhost".into()));
        match Client::connect(o).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "broker did not come up: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    c.subscribe("r", QoS::AtLeastOnce).await.unwrap();
    assert_eq!(shown().await, Some(first.clone()));
    // New files, and SIGHUP to reload them now (without it, within 5 s).
    let second = issue(2);
    assert!(Command::new("kill")
        .args(["-HUP", &b.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while shown().await != Some(second.clone()) {
        assert!(Instant::now() < deadline, "the new certificate is not used");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection made before goes on.
    for n in 0..3 {
        c.publish("r", format!("after {n}"), QoS::AtLeastOnce, false)
            .await
            .unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.payload, format!("after {n}").as_bytes());
    }
    c.disconnect().await;
    drop(b);
    let _ = std::fs::remove_dir_all(dir);
}

/// `[runtime] worker_threads` is the number of tokio worker threads the binary runs
/// (counted in /proc by their name, `tokio-rt-worker`), except that one thread is tokio's
/// current-thread scheduler, which runs on the main thread and starts no worker; the
/// default (0) is that on a machine of one or two cores and one per core on a larger one.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_the_configured_worker_threads() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let default_workers = if cores <= 2 { 0 } else { cores };
    for (threads, expected) in [(0usize, default_workers), (1, 0), (3, 3)] {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("mqtt-bin-workers-{}-{threads}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("broker.toml");
        std::fs::write(
            &config,
            format!(
                "[[listener]]\nbind = \"127.0.0.1:{port}\"\n[runtime]\nworker_threads = {threads}\n"
            ),
        )
        .unwrap();
        let b = spawn(&["-c", config.to_str().unwrap()]);
        // Serving: the runtime is up.
        let (c, _rx) = connect(port, "workers").await;
        drop(c);
        let workers = std::fs::read_dir(format!("/proc/{}/task", b.0.id()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim() == "tokio-rt-worker")
            .count();
        // Blocking-pool threads have the same name; none has been started by a plain
        // connect without a password check.
        assert_eq!(
            workers, expected,
            "worker threads with worker_threads = {threads} on {cores} cores"
        );
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
