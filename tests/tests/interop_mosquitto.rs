//! Interop with the mosquitto command-line clients (Debian package `mosquitto-clients`,
//! installed by `.ci/run`) against every broker (tokio, std threads, smol, async-std; see
//! `mqtt_tests::brokers`) on an ephemeral loopback port:
//! publish/subscribe at each QoS in 3.1, 3.1.1 and 5.0, retained messages, user name and
//! password, a topic denied by the ACL, and TLS with `--cafile`.

use mqtt_tests::brokers::{Broker, Runtime};
use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: `apt-get install -y mosquitto-clients` (.ci/run does it)"
    );
    name.to_string()
}

fn wait(child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    let mut child = child;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn broker(rt: Runtime, extra: &str) -> (Broker, u16) {
    let text = format!("[[listener]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 1\n{extra}");
    let running = Broker::start(rt, &text).await;
    let port = running.port();
    (running, port)
}

fn sub(port: u16, version: &str, args: &[&str]) -> Child {
    Command::new(tool("mosquitto_sub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            version,
            "-v",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn publish(port: u16, version: &str, args: &[&str]) -> Output {
    let out = Command::new(tool("mosquitto_pub"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
        .args(args)
        .output()
        .unwrap();
    out
}

fn lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

async fn pub_sub_every_version_and_qos(rt: Runtime) {
    let (running, port) = broker(rt, "").await;
    for version in ["mqttv31", "mqttv311", "mqttv5"] {
        let topic = format!("interop/{version}");
        // The previous round's subscriber is gone (its clean session with it).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while running.gauges().await.unwrap().subscriptions > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "old subscription still there"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = sub(
            port,
            version,
            &["-t", &topic, "-q", "2", "-C", "3", "-W", "10"],
        );
        // The subscriber is ready when the broker holds its subscription.
        running
            .wait_for_subscriptions(1, Duration::from_secs(10))
            .await
            .unwrap();
        for q in ["0", "1", "2"] {
            let o = publish(
                port,
                version,
                &["-t", &topic, "-m", &format!("m{q}"), "-q", q],
            );
            assert!(
                o.status.success(),
                "{version} pub q{q}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let out = tokio::task::spawn_blocking(move || wait(s, Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(
            lines(&out),
            [
                format!("{topic} m0"),
                format!("{topic} m1"),
                format!("{topic} m2")
            ],
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    running.shutdown().await;
}

async fn retained_message(rt: Runtime) {
    let (running, port) = broker(rt, "").await;
    let o = publish(
        port,
        "mqttv311",
        &["-t", "r/1", "-m", "kept", "-r", "-q", "1"],
    );
    assert!(o.status.success());
    for version in ["mqttv311", "mqttv5"] {
        let s = sub(
            port,
            version,
            &["-t", "r/#", "-C", "1", "-W", "5", "-F", "%r %t %p"],
        );
        let out = tokio::task::spawn_blocking(move || wait(s, Duration::from_secs(6)))
            .await
            .unwrap();
        assert_eq!(lines(&out), ["1 r/1 kept"], "{version}");
    }
    // $SYS is there too, retained.
    let s = sub(
        port,
        "mqttv311",
        &["-t", "$SYS/broker/version", "-C", "1", "-W", "5"],
    );
    let out = tokio::task::spawn_blocking(move || wait(s, Duration::from_secs(6)))
        .await
        .unwrap();
    assert!(
        lines(&out)[0].starts_with("$SYS/broker/version mqtt-broker"),
        "{:?}",
        lines(&out)
    );
    running.shutdown().await;
}

async fn username_password_and_acl(rt: Runtime) {
    let dir = std::env::temp_dir().join(format!("mqtt-interop-{}-{rt:?}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut pw = adapter_tokio::auth::Passwords::default();
    pw.set("ann", "s3cret").unwrap();
    std::fs::write(dir.join("passwd"), pw.to_text()).unwrap();
    let mut acl = std::fs::File::create(dir.join("acl")).unwrap();
    writeln!(acl, "deny both any secret/#").unwrap();
    let extra = format!(
        "[auth]\npassword_file = \"{}\"\nacl_file = \"{}\"\n",
        dir.join("passwd").display(),
        dir.join("acl").display()
    );
    let (running, port) = broker(rt, &extra).await;
    let ok = publish(
        port,
        "mqttv311",
        &["-t", "a", "-m", "x", "-u", "ann", "-P", "s3cret"],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for version in ["mqttv311", "mqttv5"] {
        let bad = publish(
            port,
            version,
            &["-t", "a", "-m", "x", "-u", "ann", "-P", "wrong"],
        );
        assert!(
            !bad.status.success(),
            "{version}: a wrong password is refused"
        );
    }
    // A subscription to a denied topic gets no messages; an allowed one does.
    let denied = sub(
        port,
        "mqttv311",
        &[
            "-t", "secret/x", "-u", "ann", "-P", "s3cret", "-C", "1", "-W", "3",
        ],
    );
    let allowed = sub(
        port,
        "mqttv311",
        &[
            "-t", "open/x", "-u", "ann", "-P", "s3cret", "-C", "1", "-W", "5",
        ],
    );
    running
        .wait_for_subscriptions(1, Duration::from_secs(10))
        .await
        .unwrap();
    for t in ["secret/x", "open/x"] {
        publish(
            port,
            "mqttv311",
            &["-t", t, "-m", "m", "-u", "ann", "-P", "s3cret", "-q", "1"],
        );
    }
    let (d, a) = tokio::task::spawn_blocking(move || {
        (
            wait(denied, Duration::from_secs(5)),
            wait(allowed, Duration::from_secs(6)),
        )
    })
    .await
    .unwrap();
    assert!(lines(&d).is_empty(), "{:?}", lines(&d));
    assert_eq!(lines(&a), ["open/x m"]);
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

async fn tls_with_cafile(rt: Runtime) {
    let dir = std::env::temp_dir().join(format!("mqtt-interop-tls-{}-{rt:?}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A CA and a server certificate for localhost, made here.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "interop CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"tls\"\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n[sys]\ninterval_secs = 0\n",
        d = dir.display()
    );
    let running = Broker::start(rt, &text).await;
    let port = running.port();
    let cafile = dir.join("ca.pem").display().to_string();
    for version in ["mqttv311", "mqttv5"] {
        let s = Command::new(tool("mosquitto_sub"))
            .args([
                "-h",
                "localhost",
                "-p",
                &port.to_string(),
                "-V",
                version,
                "--cafile",
                &cafile,
            ])
            .args(["-t", "tls/x", "-q", "1", "-C", "1", "-W", "10", "-v"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        running
            .wait_for_subscriptions(1, Duration::from_secs(10))
            .await
            .unwrap();
        let o = Command::new(tool("mosquitto_pub"))
            .args([
                "-h",
                "localhost",
                "-p",
                &port.to_string(),
                "-V",
                version,
                "--cafile",
                &cafile,
            ])
            .args(["-t", "tls/x", "-m", "secret", "-q", "1"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = tokio::task::spawn_blocking(move || wait(s, Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(
            lines(&out),
            ["tls/x secret"],
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while running.gauges().await.unwrap().subscriptions > 0 {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

mqtt_tests::for_each_broker!(
    pub_sub_every_version_and_qos,
    retained_message,
    username_password_and_acl,
    tls_with_cafile,
);
