//! Durable state through the tokio broker: sessions, subscriptions, queued and retained
//! messages survive a restart on the same data directory, every durability mode, and a
//! damaged store is refused or moved aside as configured.

use adapter_tokio::client::{Client, ClientOptions};
use adapter_tokio::config::Config;
use adapter_tokio::server::{start, Running};
use mqtt_proto::{ProtocolVersion, QoS};
use std::path::{Path, PathBuf};
use std::time::Duration;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("mqtt-persist-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        if let Some(parent) = self.0.parent() {
            let prefix = format!("{}.damaged-", self.0.file_name().unwrap().to_string_lossy());
            for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

fn config(dir: &Path, durability: &str, extra: &str) -> Config {
    Config::parse(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n\
         [persistence]\ndir = \"{}\"\ndurability = \"{durability}\"\ninterval_ms = 50\n{extra}",
        dir.display()
    ))
    .unwrap()
}

async fn broker(dir: &Path, durability: &str) -> Running {
    start(config(dir, durability, ""), None).await.unwrap()
}

fn options(b: &Running, id: &str, v: ProtocolVersion) -> ClientOptions {
    let mut o = ClientOptions::new(&b.local_addrs[0].to_string(), id);
    o.version = v;
    o.reconnect = None;
    o
}

async fn recv(rx: &mut tokio::sync::mpsc::Receiver<mqtt_proto::Publish>) -> String {
    let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a message in time")
        .expect("the client is running");
    String::from_utf8(m.payload.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart_in_every_durability_mode() {
    for durability in ["fsync", "interval", "none"] {
        for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let dir = TempDir::new(&format!("{durability}-{v}"));
            let b = broker(&dir.0, durability).await;
            let (sub, _rx) = Client::connect(options(&b, "sub", v)).await.unwrap();
            sub.subscribe("p/#", QoS::ExactlyOnce).await.unwrap();
            sub.disconnect().await;
            let (publisher, _) = Client::connect(options(&b, "pub", v)).await.unwrap();
            for (i, q) in [QoS::AtLeastOnce, QoS::ExactlyOnce].into_iter().enumerate() {
                publisher
                    .publish("p/x", format!("m{i}"), q, false)
                    .await
                    .unwrap();
            }
            publisher
                .publish("p/r", "retained", QoS::AtLeastOnce, true)
                .await
                .unwrap();
            publisher.disconnect().await;
            b.shutdown().await;

            let b = broker(&dir.0, durability).await;
            let (sub, mut rx) = Client::connect(options(&b, "sub", v)).await.unwrap();
            assert!(sub.session_present(), "{durability} {v}: session kept");
            let mut got = vec![];
            for _ in 0..3 {
                got.push(recv(&mut rx).await);
            }
            assert_eq!(got, ["m0", "m1", "retained"], "{durability} {v}");
            // The subscription came back too.
            let (publisher, _) = Client::connect(options(&b, "pub2", v)).await.unwrap();
            publisher
                .publish("p/y", "after", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            assert_eq!(recv(&mut rx).await, "after");
            let (late, mut late_rx) = Client::connect(options(&b, "late", v)).await.unwrap();
            late.subscribe("p/r", QoS::AtLeastOnce).await.unwrap();
            assert_eq!(recv(&mut late_rx).await, "retained");
            b.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_is_refused_or_moved_aside() {
    let dir = TempDir::new("damaged");
    let b = broker(&dir.0, "fsync").await;
    let (sub, _rx) = Client::connect(options(&b, "s", ProtocolVersion::V5))
        .await
        .unwrap();
    sub.subscribe("d/#", QoS::AtLeastOnce).await.unwrap();
    sub.disconnect().await;
    b.shutdown().await;
    // Damage every file.
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                walk(&e, out);
            } else {
                out.push(e);
            }
        }
    }
    let mut files = vec![];
    walk(&dir.0, &mut files);
    for f in files {
        let len = std::fs::metadata(&f).unwrap().len() as usize;
        std::fs::write(&f, vec![0x5A; len]).unwrap();
    }
    let err = match start(config(&dir.0, "fsync", ""), None).await {
        Ok(_) => panic!("a damaged store must stop the start"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&dir.0.display().to_string()) && err.contains("move-aside"),
        "names the directory and the way out: {err}"
    );
    let b = start(
        config(&dir.0, "fsync", "on_damage = \"move-aside\"\n"),
        None,
    )
    .await
    .expect("starts empty after moving the store aside");
    let (s, _rx) = Client::connect(options(&b, "s", ProtocolVersion::V5))
        .await
        .unwrap();
    assert!(!s.session_present(), "started empty");
    let aside = std::fs::read_dir(dir.0.parent().unwrap())
        .unwrap()
        .flatten()
        .any(|e| {
            e.file_name().to_string_lossy().starts_with(&format!(
                "{}.damaged-",
                dir.0.file_name().unwrap().to_string_lossy()
            ))
        });
    assert!(aside, "the damaged store is kept aside");
    b.shutdown().await;
}
