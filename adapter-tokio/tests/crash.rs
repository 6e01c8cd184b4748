//! Nothing acknowledged is lost across `kill -9`: the broker binary runs with its default
//! durability (`fsync`) on a data directory; persistent subscribers (QoS 1 and QoS 2,
//! 5.0 and 3.1.1) and publishers (QoS 1 and QoS 2) run while the broker is killed with
//! SIGKILL at random moments and started again on the same directory, ten times. At the
//! end every acknowledged message has reached every subscriber at least once, QoS 2
//! messages to the QoS 2 subscriber exactly once, and the retained message and the
//! subscriptions survived.

use adapter_tokio::client::{Client, ClientOptions};
use mqtt_proto::{ProtocolVersion, Publish, QoS};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-broker");
const KILLS: usize = 10;

struct Broker {
    child: Child,
    port: u16,
    data: PathBuf,
}

impl Broker {
    fn start(port: u16, data: &PathBuf) -> Broker {
        let child = Command::new(BIN)
            .args(["-p", &port.to_string(), "--data-dir"])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the broker binary starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the broker did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        Broker {
            child,
            port,
            data: data.clone(),
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.kill9();
        *self = Broker::start(self.port, &self.data);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A small deterministic generator, seeded per run (the seed is printed).
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn options(port: u16, id: &str, v: ProtocolVersion) -> ClientOptions {
    let mut o = ClientOptions::new(&format!("127.0.0.1:{port}"), id);
    o.version = v;
    o.reconnect = Some(Duration::from_millis(50));
    o.keep_alive = 5;
    o
}

type Received = Arc<Mutex<Vec<Publish>>>;

fn collect(mut rx: tokio::sync::mpsc::Receiver<Publish>) -> Received {
    let got: Received = Arc::default();
    let g = got.clone();
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            g.lock().unwrap().push(m);
        }
    });
    got
}

fn counts(got: &Received) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for m in got.lock().unwrap().iter() {
        *c.entry(String::from_utf8_lossy(&m.payload).into_owned())
            .or_default() += 1;
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_across_kill_9() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id());
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let data = std::env::temp_dir().join(format!("mqtt-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let port = free_port();
    let mut broker = Broker::start(port, &data);

    // Persistent subscribers.
    let (s1, rx1) = Client::connect(options(port, "sub-qos1", ProtocolVersion::V5))
        .await
        .unwrap();
    s1.subscribe("crash/#", QoS::AtLeastOnce).await.unwrap();
    let got1 = collect(rx1);
    let (s2, rx2) = Client::connect(options(port, "sub-qos2", ProtocolVersion::V3_1_1))
        .await
        .unwrap();
    s2.subscribe("crash/#", QoS::ExactlyOnce).await.unwrap();
    let got2 = collect(rx2);
    // A retained message, acknowledged before the first kill.
    let (r, _) = Client::connect(options(port, "retainer", ProtocolVersion::V5))
        .await
        .unwrap();
    r.publish("kept/one", "retained", QoS::AtLeastOnce, true)
        .await
        .unwrap();
    r.disconnect().await;

    // Publishers record what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = vec![];
    for (name, qos, v) in [
        ("p1", QoS::AtLeastOnce, ProtocolVersion::V5),
        ("p2", QoS::ExactlyOnce, ProtocolVersion::V3_1_1),
    ] {
        let (c, _) = Client::connect(options(port, name, v)).await.unwrap();
        let stop = stop.clone();
        publishers.push(tokio::spawn(async move {
            let mut acked = BTreeSet::new();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) && n < 100_000 {
                let payload = format!("{name}-{n}");
                let r = tokio::time::timeout(
                    Duration::from_secs(20),
                    c.publish("crash/x", payload.clone(), qos, false),
                )
                .await;
                if let Ok(Ok(())) = r {
                    acked.insert(payload);
                }
                n += 1;
            }
            c.disconnect().await;
            (name, qos, acked, n)
        }));
    }

    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(200 + rng.next(800))).await;
        tokio::task::block_in_place(|| broker.restart());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked: Vec<(&str, QoS, BTreeSet<String>, u32)> = vec![];
    for p in publishers {
        acked.push(
            tokio::time::timeout(Duration::from_secs(60), p)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    for (name, _, a, sent) in &acked {
        println!("{name}: {sent} published, {} acknowledged", a.len());
        assert!(!a.is_empty(), "{name}: some messages were acknowledged");
    }

    // Every acknowledged message arrives (the subscribers reconnect by themselves).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (c1, c2) = (counts(&got1), counts(&got2));
        let missing: Vec<&String> = acked
            .iter()
            .flat_map(|(_, _, a, _)| a.iter())
            .filter(|p| !c1.contains_key(*p) || !c2.contains_key(*p))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged but never delivered ({} of them): {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // QoS 2 end to end: never twice, acknowledged or not.
    let c2 = counts(&got2);
    for (p, n) in &c2 {
        if p.starts_with("p2-") {
            assert_eq!(*n, 1, "{p} reached the QoS 2 subscriber {n} times");
        }
    }
    // Nothing arrives that was never published.
    for (p, _) in counts(&got1).iter().chain(c2.iter()) {
        let (name, n) = p.split_once('-').unwrap();
        let sent = acked.iter().find(|a| a.0 == name).unwrap().3;
        assert!(n.parse::<u32>().unwrap() < sent, "{p} was never published");
    }
    // The retained message survived every restart.
    let (late, rx) = Client::connect(options(port, "late", ProtocolVersion::V5))
        .await
        .unwrap();
    late.subscribe("kept/#", QoS::AtLeastOnce).await.unwrap();
    let got = collect(rx);
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the retained message is gone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(&got.lock().unwrap()[0].payload[..], b"retained");
    s1.disconnect().await;
    s2.disconnect().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&data);
}
