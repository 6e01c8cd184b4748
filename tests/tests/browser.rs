//! Headless Chromium against the tokio broker: MQTT.js (npm package `mqtt`) in a web page
//! over WebSocket and WSS, and the web console. The browser side is
//! `tests/browser/run.mjs` (playwright-core driving Debian's `/usr/bin/chromium`); this
//! file starts the broker in-process on ephemeral loopback ports, runs it, and checks its
//! exit status and report.
//!
//! Needs `node`, `chromium` and `npm ci --prefix tests/browser` (`.ci/run` installs them);
//! without them the tests fail and say what to install.

use adapter_tokio::client::{Client, ClientOptions};
use adapter_tokio::config::Config;
use adapter_tokio::server::{start, Running};
use mqtt_proto::QoS;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one node run may take before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// One Chromium at a time: the machines that run this have few cores.
static CHROMIUM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const INSTALL: &str = "apt-get install -y chromium nodejs npm && npm ci --prefix tests/browser \
                       (.ci/run does both)";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Fails (never skips) when something the test needs is missing.
fn check_prerequisites() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is not installed: {INSTALL}"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: {INSTALL}"
    );
    for package in ["playwright-core", "mqtt"] {
        assert!(
            browser_dir().join("node_modules").join(package).exists(),
            "tests/browser/node_modules/{package} is missing: {INSTALL}"
        );
    }
}

/// Runs `node run.mjs ARGS` (bounded by [`RUN_LIMIT`]); panics with its report unless it
/// passed. Returns the report.
async fn run_node(args: Vec<String>) -> String {
    let dir = browser_dir();
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("node")
            .arg(dir.join("run.mjs"))
            .args(&args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node starts");
        let deadline = Instant::now() + RUN_LIMIT;
        while child.try_wait().expect("node runs").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("node's output")
    })
    .await
    .expect("the node run");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "{report}(browser run took {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success(),
        "the browser run failed ({}):\n{report}",
        output.status
    );
    assert!(report.contains(" 0 failed"), "{report}");
    report
}

/// A self-signed certificate for 127.0.0.1 and localhost, in a fresh directory.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("a certificate");
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c, k)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mqtt-browser-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn broker(text: &str) -> Running {
    let text = format!("{text}\n[sys]\ninterval_secs = 0\n[persistence]\nenabled = false\n");
    start(Config::parse(&text).expect("valid config"), None)
        .await
        .expect("broker starts")
}

/// MQTT.js in Chromium: over WebSocket (3.1.1) and WSS (5.0), subscribe, publish at QoS
/// 0, 1 and 2, and receive all three; the page's list is the evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_js_in_chromium_over_ws_and_wss() {
    check_prerequisites();
    let _one = CHROMIUM.lock().await;
    let dir = temp_dir("mqtt");
    let (cert, key) = certificate(&dir);
    let running = broker(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"wss\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    ))
    .await;
    let (ws, wss) = (running.local_addrs[0], running.local_addrs[1]);
    let report = run_node(vec![
        "mqtt".into(),
        format!("ws://{ws}/mqtt"),
        format!("wss://{wss}/mqtt"),
        cert.display().to_string(),
    ])
    .await;
    for line in [
        "ok   ws: received \"browser/page-ws/qos2 QoS 2: hello at QoS 2\"",
        "ok   wss: received \"browser/page-wss/qos1 QoS 1: hello at QoS 1\"",
        "ok   wss: exactly three messages",
    ] {
        assert!(report.contains(line), "{line} missing in:\n{report}");
    }
    // The broker saw both pages come and go.
    let gauges = running.gauges().await.unwrap();
    assert_eq!(gauges.connections, 0, "{gauges:?}");
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The web console in Chromium: it shows a client the test connected, its subscription
/// and a retained message; a screenshot goes to `target/browser-artifacts/console.png`;
/// its disconnect button disconnects the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium() {
    check_prerequisites();
    let _one = CHROMIUM.lock().await;
    let running = broker(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nname = \"mqtt\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\nname = \"websocket\"\n\
         [metrics]\nbind = \"127.0.0.1:0\"\nconsole = true\n",
    )
    .await;
    let mqtt = running.local_addrs[0].to_string();
    let http = running.metrics_addr.unwrap();
    let client = |id: &str| {
        let mut o = ClientOptions::new(&mqtt, id);
        o.reconnect = None;
        o
    };
    let (sensor, _sensor_messages) = Client::connect(client("kitchen-sensor")).await.unwrap();
    sensor
        .subscribe("home/kitchen/commands/#", QoS::ExactlyOnce)
        .await
        .unwrap();
    sensor
        .publish("home/kitchen/temperature", "21.5", QoS::AtLeastOnce, true)
        .await
        .unwrap();
    let mut options = client("dashboard");
    options.version = mqtt_proto::ProtocolVersion::V3_1_1;
    let (dashboard, mut dashboard_messages) = Client::connect(options).await.unwrap();
    dashboard
        .subscribe("home/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    // Some traffic for the rate chart while the page is open: 10 to 50 messages a
    // second, changing every two seconds.
    let traffic = tokio::spawn(async move {
        let start = Instant::now();
        'publishing: for i in 0u32.. {
            let burst = 1 + start.elapsed().as_secs() / 2 % 5;
            for _ in 0..burst {
                let reading = format!("{:.1}", 40.0 + f64::from(i % 10) / 10.0);
                let qos = if i % 2 == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                };
                if sensor
                    .publish("home/kitchen/humidity", reading, qos, false)
                    .await
                    .is_err()
                {
                    break 'publishing;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let drain = tokio::spawn(async move { while dashboard_messages.recv().await.is_some() {} });

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("browser-artifacts/console.png");
    let _ = std::fs::remove_file(&screenshot);
    let report = run_node(vec![
        "console".into(),
        format!("http://{http}/"),
        "kitchen-sensor".into(),
        "home/kitchen/commands/#".into(),
        "home/kitchen/temperature".into(),
        screenshot.display().to_string(),
    ])
    .await;
    assert!(
        report.contains("ok   clients table shows kitchen-sensor"),
        "{report}"
    );
    assert!(
        report.contains("ok   disconnect button removes kitchen-sensor"),
        "{report}"
    );
    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    println!("screenshot: {}", screenshot.display());
    // The button disconnected the sensor: only the dashboard is left.
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.gauges().await.unwrap().connections > 1 {
        assert!(Instant::now() < deadline, "kitchen-sensor still connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    traffic.abort();
    dashboard.disconnect().await;
    drain.abort();
    running.shutdown().await;
}
