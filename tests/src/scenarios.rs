//! Black-box scenarios: what any of the project's brokers must do, seen from clients over
//! real sockets. Each scenario is an async function of a [`Target`] (one broker, one
//! transport, one protocol version) that asserts and returns an error on the first
//! difference; every wait is bounded, so a broken broker fails a scenario instead of
//! hanging it.
//!
//! The brokers are started by a [`Launcher`], one per broker implementation. A test file
//! names its launcher and [`scenario_tests!`](crate::scenario_tests) turns every scenario
//! into one `#[test]` that runs it over TCP, TLS, WebSocket and WSS, with MQTT 3.1.1 and
//! 5.0, concurrently:
//!
//! ```ignore
//! struct MyBroker(/* its handle */);
//! impl mqtt_tests::scenarios::Launcher for MyBroker { /* start it from a Setup */ }
//! mqtt_tests::scenario_tests!(MyBroker);
//! ```
//!
//! What a launched broker must offer (see [`Setup`]):
//! - listeners on 127.0.0.1 for `tcp`, `tls`, `ws` (path `/mqtt`) and `wss` (path `/mqtt`),
//!   TLS with [`Setup::cert`] and [`Setup::key`];
//! - anonymous clients allowed on them;
//! - the password file [`Setup::passwd`] (argon2id, the `mqtt-broker passwd` format) and
//!   the ACL file [`Setup::acl`] (see `CONFIG.md`);
//! - `$SYS` topics, retained, published within a second of the start.
//!
//! Scenarios keep apart by their [`Target::tag`]: it starts every topic and client id, so
//! all targets can run against one broker at once.

use adapter_tokio::client::{Client, ClientError, ClientOptions};
use mqtt_proto::{ProtocolVersion, Publish, QoS, ReasonCode};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc::Receiver;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// How long one expected message may take.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long one scenario on one target may take.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(20);
/// How long the broker gets to act on a DISCONNECT seen from another connection, where a
/// scenario checks that something does not happen.
pub const SETTLE: Duration = Duration::from_millis(200);

/// The password the scenarios use, for user [`USER`].
pub const PASSWORD: &str = "correct horse";
/// The user in [`Setup::passwd`].
pub const USER: &str = "alice";
/// The ACL every launched broker loads: subscriptions under `acl-denied/` are refused,
/// everything else is allowed.
pub const ACL: &str = "deny subscribe any acl-denied/#\ndefault allow\n";

/// A transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// MQTT over TCP.
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket, subprotocol `mqtt`.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl Transport {
    /// All of them.
    pub const ALL: [Transport; 4] = [Self::Tcp, Self::Tls, Self::Ws, Self::Wss];

    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }
}

/// A launched broker's listeners: client addresses per transport, in the async
/// client's address syntax (`mqtt://127.0.0.1:1883`, `ws://127.0.0.1:8080/mqtt`, ...).
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `mqtt://host:port`.
    pub tcp: String,
    /// `mqtts://localhost:port` (the certificate is for `localhost` and `127.0.0.1`).
    pub tls: String,
    /// `ws://host:port/mqtt`.
    pub ws: String,
    /// `wss://localhost:port/mqtt`.
    pub wss: String,
}

impl Endpoints {
    /// The addresses of listeners bound to `tcp`, `tls`, `ws` and `wss` on 127.0.0.1.
    pub fn on_loopback(tcp: u16, tls: u16, ws: u16, wss: u16) -> Self {
        Self {
            tcp: format!("mqtt://127.0.0.1:{tcp}"),
            tls: format!("mqtts://localhost:{tls}"),
            ws: format!("ws://127.0.0.1:{ws}/mqtt"),
            wss: format!("wss://localhost:{wss}/mqtt"),
        }
    }

    fn get(&self, t: Transport) -> &str {
        match t {
            Transport::Tcp => &self.tcp,
            Transport::Tls => &self.tls,
            Transport::Ws => &self.ws,
            Transport::Wss => &self.wss,
        }
    }
}

/// Files every launcher configures its broker with, made once per test process:
/// a CA, a server certificate for `localhost` / `127.0.0.1`, a password file with
/// [`USER`] / [`PASSWORD`], and the [`ACL`].
pub struct Setup {
    /// The directory holding them.
    pub dir: PathBuf,
    /// Server certificate (PEM).
    pub cert: PathBuf,
    /// Server key (PEM).
    pub key: PathBuf,
    /// Password file.
    pub passwd: PathBuf,
    /// ACL file.
    pub acl: PathBuf,
    tls: Arc<ClientConfig>,
}

impl Setup {
    /// The files, made on the first call.
    pub fn get() -> &'static Setup {
        static SETUP: OnceLock<Setup> = OnceLock::new();
        SETUP.get_or_init(|| Setup::make().expect("test certificates and files"))
    }

    fn make() -> anyhow::Result<Setup> {
        let dir = std::env::temp_dir().join(format!("mqtt-scenarios-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(vec![])?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "scenario CA");
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?
            .signed_by(&key, &issuer)?;
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        let mut passwords = adapter_tokio::auth::Passwords::default();
        passwords.set(USER, PASSWORD)?;
        let passwd = dir.join("passwd");
        std::fs::write(&passwd, passwords.to_text())?;
        let acl = dir.join("acl");
        std::fs::write(&acl, ACL)?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone())?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Setup {
            dir,
            cert: cert_path,
            key: key_path,
            passwd,
            acl,
            tls: Arc::new(tls),
        })
    }
}

/// The configuration every launcher gives its broker: TCP, TLS, WebSocket and WSS
/// listeners on 127.0.0.1 (ephemeral ports, in that order in the broker's bound
/// addresses), the password file and ACL of `setup`, `$SYS` every second, and no
/// durable state.
pub fn broker_config(setup: &Setup) -> anyhow::Result<mqtt_adapter_common::config::Config> {
    let (cert, key) = (setup.cert.display(), setup.key.display());
    let text = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
[[listener]]
bind = "127.0.0.1:0"
protocol = "tls"
cert = "{cert}"
key = "{key}"
[[listener]]
bind = "127.0.0.1:0"
protocol = "ws"
[[listener]]
bind = "127.0.0.1:0"
protocol = "wss"
cert = "{cert}"
key = "{key}"
[auth]
password_file = "{passwd}"
acl_file = "{acl}"
[sys]
interval_secs = 1
[persistence]
enabled = false
"#,
        passwd = setup.passwd.display(),
        acl = setup.acl.display(),
    );
    mqtt_adapter_common::config::Config::parse(&text).map_err(anyhow::Error::msg)
}

/// Starts and stops one broker implementation for the scenarios.
pub trait Launcher: Sized + Send + 'static {
    /// Starts a broker configured as the [module docs](self) say, with the files of
    /// `setup`, and tells where its listeners are.
    fn launch(setup: &Setup) -> impl Future<Output = anyhow::Result<(Endpoints, Self)>> + Send;
    /// Stops it.
    fn stop(self) -> impl Future<Output = ()> + Send;
}

/// One broker, one transport, one protocol version.
#[derive(Debug, Clone)]
pub struct Target {
    /// The broker's listeners.
    pub endpoints: Endpoints,
    /// The transport used.
    pub transport: Transport,
    /// The protocol version used.
    pub version: ProtocolVersion,
    /// Unique per target: the first level of every topic and the start of every client id.
    pub tag: String,
    tls: Arc<ClientConfig>,
}

impl Target {
    /// Every transport with every protocol version.
    pub fn all(endpoints: &Endpoints, setup: &Setup) -> Vec<Target> {
        let mut v = vec![];
        for transport in Transport::ALL {
            for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
                let ver = if version.is_v5() { "v5" } else { "v311" };
                v.push(Target {
                    endpoints: endpoints.clone(),
                    transport,
                    version,
                    tag: format!("{}-{ver}", transport.name()),
                    tls: setup.tls.clone(),
                });
            }
        }
        v
    }

    /// True for MQTT 5.0.
    pub fn v5(&self) -> bool {
        self.version.is_v5()
    }

    /// A topic of this target: `{tag}/{rest}`.
    pub fn topic(&self, rest: &str) -> String {
        format!("{}/{rest}", self.tag)
    }

    /// Client options for this target: its address, version and TLS; persistent session
    /// (Clean Start 0), no reconnecting. The client id is `{tag}-{name}`.
    pub fn options(&self, name: &str) -> ClientOptions {
        let mut o = ClientOptions::new(
            self.endpoints.get(self.transport),
            &format!("{}-{name}", self.tag),
        );
        o.version = self.version;
        o.reconnect = None;
        o.tls = Some((self.tls.clone(), "localhost".into()));
        o
    }

    /// Connects a client with [`options`](Self::options).
    pub async fn connect(&self, name: &str) -> anyhow::Result<(Client, Receiver<Publish>)> {
        self.connect_with(self.options(name)).await
    }

    /// Connects a client, within [`WAIT`].
    pub async fn connect_with(
        &self,
        options: ClientOptions,
    ) -> anyhow::Result<(Client, Receiver<Publish>)> {
        let id = options.client_id.clone();
        tokio::time::timeout(WAIT, Client::connect(options))
            .await
            .map_err(|_| anyhow::anyhow!("{id}: no CONNACK within {WAIT:?}"))?
    }
}

/// A scenario.
pub type Scenario = fn(Target) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Launches `L`, runs `scenario` on every target at once, stops the broker, and panics
/// naming every target that failed.
pub async fn run<L: Launcher>(name: &str, scenario: Scenario) {
    let setup = Setup::get();
    let (endpoints, broker) = L::launch(setup).await.expect("broker launched");
    let mut tasks = tokio::task::JoinSet::new();
    for t in Target::all(&endpoints, setup) {
        tasks.spawn(async move {
            let tag = t.tag.clone();
            let r = match tokio::time::timeout(SCENARIO_LIMIT, scenario(t)).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("not finished within {SCENARIO_LIMIT:?}")),
            };
            (tag, r)
        });
    }
    let mut failures = vec![];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((tag, Err(e))) => failures.push(format!("{name} [{tag}]: {e:#}")),
            Err(e) => failures.push(format!("{name}: a target panicked: {e}")),
        }
    }
    broker.stop().await;
    failures.sort();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// One `#[test]` per scenario, each running it on every target of the broker `L`
/// started by its [`Launcher`].
#[macro_export]
macro_rules! scenario_tests {
    ($launcher:ty) => {
        $crate::scenario_tests!(@each $launcher;
            publish_subscribe_each_qos,
            retained_on_subscribe_and_cleared,
            will_on_abnormal_close_only,
            persistent_session_queues_while_offline,
            session_takeover,
            wildcards,
            dollar_topics_not_matched_by_wildcards,
            unsubscribe_stops_delivery,
            shared_subscription,
            overlapping_subscriptions,
            acl_denied_subscription,
            authentication,
        );
    };
    (@each $launcher:ty; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::scenarios::run::<$launcher>(stringify!($name), |t| {
                    Box::pin($crate::scenarios::$name(t))
                })
                .await;
            }
        )*
    };
}

// ----- Helpers ----------------------------------------------------------------------

/// The next message, within [`WAIT`].
async fn next(rx: &mut Receiver<Publish>, what: &str) -> anyhow::Result<Publish> {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => anyhow::bail!("{what}: the connection ended"),
        Err(_) => anyhow::bail!("{what}: nothing within {WAIT:?}"),
    }
}

/// Messages up to and including the first on `marker`.
async fn until(
    rx: &mut Receiver<Publish>,
    marker: &str,
    what: &str,
) -> anyhow::Result<Vec<Publish>> {
    let mut got = vec![];
    loop {
        let m = next(rx, &format!("{what} (waiting for {marker})")).await?;
        let done = m.topic.as_str() == marker;
        got.push(m);
        if done {
            return Ok(got);
        }
    }
}

fn text(m: &Publish) -> String {
    String::from_utf8_lossy(&m.payload).into_owned()
}

fn summary(ms: &[Publish]) -> Vec<(String, String, QoS)> {
    ms.iter()
        .map(|m| (m.topic.to_string(), text(m), m.qos))
        .collect()
}

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

// ----- Scenarios --------------------------------------------------------------------

/// Publish at QoS 0, 1 and 2 to subscriptions granted QoS 0, 1 and 2: each message
/// arrives once, in order, at QoS min(published, granted)
/// (3.1.1 [MQTT-3.8.4-6] / 5.0 section 3.8.4, [MQTT-4.6.0-6] order).
pub async fn publish_subscribe_each_qos(t: Target) -> anyhow::Result<()> {
    let (sub, mut rx) = t.connect("sub").await?;
    for granted in QOS {
        let code = sub
            .subscribe(&t.topic(&format!("qos/g{}", granted as u8)), granted)
            .await?;
        anyhow::ensure!(code == ReasonCode::granted(granted), "SUBACK {code}");
    }
    let (publisher, _) = t.connect("pub").await?;
    for granted in QOS {
        for q in QOS {
            publisher
                .publish(
                    &t.topic(&format!("qos/g{}", granted as u8)),
                    format!("p{}", q as u8),
                    q,
                    false,
                )
                .await?;
        }
    }
    for granted in QOS {
        for q in QOS {
            let m = next(&mut rx, "message").await?;
            let want = (
                t.topic(&format!("qos/g{}", granted as u8)),
                format!("p{}", q as u8),
                q.min(granted),
            );
            anyhow::ensure!(
                (m.topic.to_string(), text(&m), m.qos) == want,
                "got {:?}, want {want:?}",
                summary(&[m])
            );
            anyhow::ensure!(!m.retain, "a live message arrived with RETAIN=1");
        }
    }
    publisher.disconnect().await;
    sub.disconnect().await;
    Ok(())
}

/// A retained message is sent (RETAIN=1) to a new subscriber after its SUBACK; a live
/// one has RETAIN=0; an empty retained payload clears it, so the next subscriber gets
/// nothing ([MQTT-3.3.1-6], [MQTT-3.3.1-9], [MQTT-3.3.1-10], [MQTT-3.3.1-11]).
pub async fn retained_on_subscribe_and_cleared(t: Target) -> anyhow::Result<()> {
    let (publisher, _) = t.connect("pub").await?;
    let kept = t.topic("retained/state");
    publisher
        .publish(&kept, "on", QoS::AtLeastOnce, true)
        .await?;
    // The newest retained message replaces the last.
    publisher
        .publish(&kept, "off", QoS::AtLeastOnce, true)
        .await?;
    let (sub, mut rx) = t.connect("sub").await?;
    sub.subscribe(&t.topic("retained/#"), QoS::AtLeastOnce)
        .await?;
    let m = next(&mut rx, "retained message").await?;
    anyhow::ensure!(
        m.topic.as_str() == kept && text(&m) == "off" && m.retain && m.qos == QoS::AtLeastOnce,
        "got {:?} retain={}",
        summary(std::slice::from_ref(&m)),
        m.retain
    );
    // A live message to a subscriber that is there: RETAIN=0 (3.1.1 [MQTT-3.3.1-9];
    // 5.0 without Retain As Published).
    publisher
        .publish(&t.topic("retained/live"), "now", QoS::AtLeastOnce, true)
        .await?;
    let m = next(&mut rx, "live retained publish").await?;
    anyhow::ensure!(text(&m) == "now" && !m.retain, "live: retain={}", m.retain);
    // Clear both.
    publisher.publish(&kept, "", QoS::AtLeastOnce, true).await?;
    publisher
        .publish(&t.topic("retained/live"), "", QoS::AtLeastOnce, true)
        .await?;
    let marker = t.topic("retained/end");
    publisher
        .publish(&marker, "end", QoS::AtLeastOnce, false)
        .await?;
    until(&mut rx, &marker, "clearing").await?;
    let (late, mut late_rx) = t.connect("late").await?;
    late.subscribe(&t.topic("retained/#"), QoS::AtLeastOnce)
        .await?;
    // Retained messages leave right after the SUBACK, so before anything published now.
    publisher
        .publish(&marker, "end", QoS::AtLeastOnce, false)
        .await?;
    let got = until(&mut late_rx, &marker, "after clearing").await?;
    anyhow::ensure!(
        got.len() == 1,
        "cleared retained messages still sent: {:?}",
        summary(&got)
    );
    for c in [publisher, sub, late] {
        c.disconnect().await;
    }
    Ok(())
}

/// The will is published when the connection ends without DISCONNECT, and discarded on
/// a normal DISCONNECT ([MQTT-3.1.2-8], [MQTT-3.1.2-10]; 3.1.1 [MQTT-3.14.4-3]).
pub async fn will_on_abnormal_close_only(t: Target) -> anyhow::Result<()> {
    let (watcher, mut rx) = t.connect("watcher").await?;
    watcher
        .subscribe(&t.topic("will/#"), QoS::AtLeastOnce)
        .await?;
    let mut o = t.options("crashes");
    o.set_will(&t.topic("will/crashes"), "gone", QoS::AtLeastOnce, false)?;
    let (crashes, _) = t.connect_with(o).await?;
    crashes.abort().await;
    let m = next(&mut rx, "will after an abnormal close").await?;
    anyhow::ensure!(
        m.topic.as_str() == t.topic("will/crashes") && text(&m) == "gone",
        "got {:?}",
        summary(&[m])
    );
    anyhow::ensure!(m.qos == QoS::AtLeastOnce, "will QoS {:?}", m.qos);
    let mut o = t.options("leaves");
    o.set_will(&t.topic("will/leaves"), "gone", QoS::AtLeastOnce, false)?;
    let (leaves, _) = t.connect_with(o).await?;
    leaves.disconnect().await;
    tokio::time::sleep(SETTLE).await;
    let marker = t.topic("will/end");
    watcher
        .publish(&marker, "end", QoS::AtLeastOnce, false)
        .await?;
    let got = until(&mut rx, &marker, "after a normal DISCONNECT").await?;
    anyhow::ensure!(
        got.len() == 1,
        "will published after DISCONNECT: {:?}",
        summary(&got)
    );
    watcher.disconnect().await;
    Ok(())
}

/// A persistent session (Clean Session / Clean Start 0) keeps its subscriptions while
/// offline and queues QoS 1 and 2 messages, delivered in order on reconnect with
/// Session Present 1 ([MQTT-3.1.2-4], [MQTT-3.1.2-5], [MQTT-3.2.2-2]).
pub async fn persistent_session_queues_while_offline(t: Target) -> anyhow::Result<()> {
    let (sub, _) = t.connect("sub").await?;
    anyhow::ensure!(!sub.session_present(), "a new session was present");
    sub.subscribe(&t.topic("persist/#"), QoS::ExactlyOnce)
        .await?;
    sub.disconnect().await;
    let (publisher, _) = t.connect("pub").await?;
    let want = [
        ("a", QoS::AtLeastOnce),
        ("b", QoS::ExactlyOnce),
        ("c", QoS::AtLeastOnce),
    ];
    for (payload, q) in want {
        publisher
            .publish(&t.topic("persist/x"), payload, q, false)
            .await?;
    }
    let (sub, mut rx) = t.connect("sub").await?;
    anyhow::ensure!(sub.session_present(), "the session was not kept");
    for (payload, q) in want {
        let m = next(&mut rx, "queued message").await?;
        anyhow::ensure!(
            text(&m) == payload && m.qos == q,
            "got {:?}, want {payload} at {q:?}",
            summary(&[m])
        );
    }
    // The subscription is still there for live messages.
    publisher
        .publish(&t.topic("persist/x"), "live", QoS::AtLeastOnce, false)
        .await?;
    let m = next(&mut rx, "live message to the resumed session").await?;
    anyhow::ensure!(text(&m) == "live", "got {:?}", summary(&[m]));
    // Clean Start 1 throws the session away.
    sub.disconnect().await;
    let mut o = t.options("sub");
    o.clean_start = true;
    let (clean, _) = t.connect_with(o).await?;
    anyhow::ensure!(!clean.session_present(), "Clean Start 1 kept the session");
    clean.disconnect().await;
    publisher.disconnect().await;
    Ok(())
}

/// A second connection with the same client id closes the first and takes its session
/// over (3.1.1 [MQTT-3.1.4-2], 5.0 [MQTT-3.1.4-3]).
pub async fn session_takeover(t: Target) -> anyhow::Result<()> {
    let (first, mut first_rx) = t.connect("twin").await?;
    first
        .subscribe(&t.topic("takeover"), QoS::AtLeastOnce)
        .await?;
    let (second, mut second_rx) = t.connect("twin").await?;
    anyhow::ensure!(second.session_present(), "the session was not taken over");
    match tokio::time::timeout(WAIT, first_rx.recv()).await {
        Ok(None) => {}
        Ok(Some(m)) => anyhow::bail!("the first connection got {:?}", summary(&[m])),
        Err(_) => anyhow::bail!("the first connection is still open after {WAIT:?}"),
    }
    let (publisher, _) = t.connect("pub").await?;
    publisher
        .publish(
            &t.topic("takeover"),
            "to the second",
            QoS::AtLeastOnce,
            false,
        )
        .await?;
    let m = next(&mut second_rx, "message to the new connection").await?;
    anyhow::ensure!(text(&m) == "to the second", "got {:?}", summary(&[m]));
    publisher.disconnect().await;
    second.disconnect().await;
    Ok(())
}

/// `+` matches one level, `#` any number including the parent level
/// ([MQTT-4.7.1-2], [MQTT-4.7.1-3]).
pub async fn wildcards(t: Target) -> anyhow::Result<()> {
    let (sub, mut rx) = t.connect("sub").await?;
    sub.subscribe(&t.topic("wild/+/temp"), QoS::AtLeastOnce)
        .await?;
    sub.subscribe(&t.topic("wild/b/#"), QoS::AtLeastOnce)
        .await?;
    let (publisher, _) = t.connect("pub").await?;
    let sent = [
        ("wild/a/temp", true),
        ("wild/a/b/temp", false),
        ("wild/temp", false),
        ("wild/b", true),
        ("wild/b/c/d", true),
        ("wild/c/hum", false),
        ("wild/b/end", true),
    ];
    for (topic, _) in sent {
        publisher
            .publish(&t.topic(topic), topic, QoS::AtLeastOnce, false)
            .await?;
    }
    let got = until(&mut rx, &t.topic("wild/b/end"), "wildcards").await?;
    let got: Vec<String> = got.iter().map(text).collect();
    let want: Vec<String> = sent
        .iter()
        .filter(|(_, m)| *m)
        .map(|(topic, _)| topic.to_string())
        .collect();
    anyhow::ensure!(got == want, "got {got:?}, want {want:?}");
    publisher.disconnect().await;
    sub.disconnect().await;
    Ok(())
}

/// `#` and `+/...` do not match topics starting with `$`, such as the broker's `$SYS`
/// topics, retained or live; a filter starting with `$SYS/` does ([MQTT-4.7.2-1]).
pub async fn dollar_topics_not_matched_by_wildcards(t: Target) -> anyhow::Result<()> {
    let (sys, mut sys_rx) = t.connect("sys").await?;
    sys.subscribe("$SYS/#", QoS::AtMostOnce).await?;
    let m = next(&mut sys_rx, "$SYS/# (is $SYS published?)").await?;
    anyhow::ensure!(m.topic.starts_with("$SYS/"), "got {}", m.topic);
    sys.disconnect().await;
    // `$SYS` topics are retained now: had these filters matched them, they would be sent
    // right after the SUBACKs, before the marker published below.
    let (all, mut rx) = t.connect("all").await?;
    all.subscribe("#", QoS::AtMostOnce).await?;
    all.subscribe("+/broker/#", QoS::AtMostOnce).await?;
    // A live update (RETAIN=0) to a client that subscribed after them: routed after the
    // filters above were in place, so before the marker if they matched it.
    let (live, mut live_rx) = t.connect("sys-live").await?;
    live.subscribe("$SYS/#", QoS::AtMostOnce).await?;
    while next(&mut live_rx, "live $SYS update").await?.retain {}
    let marker = t.topic("dollar/end");
    all.publish(&marker, "end", QoS::AtLeastOnce, false).await?;
    let got = until(&mut rx, &marker, "#").await?;
    let dollar: Vec<&str> = got
        .iter()
        .map(|m| m.topic.as_str())
        .filter(|topic| topic.starts_with('$'))
        .collect();
    anyhow::ensure!(dollar.is_empty(), "wildcards matched $ topics: {dollar:?}");
    all.disconnect().await;
    live.disconnect().await;
    Ok(())
}

/// After UNSUBSCRIBE (acknowledged), messages on that filter stop; others go on
/// ([MQTT-3.10.4-2]).
pub async fn unsubscribe_stops_delivery(t: Target) -> anyhow::Result<()> {
    let (sub, mut rx) = t.connect("sub").await?;
    sub.subscribe(&t.topic("unsub/a"), QoS::AtLeastOnce).await?;
    sub.subscribe(&t.topic("unsub/b"), QoS::AtLeastOnce).await?;
    let (publisher, _) = t.connect("pub").await?;
    publisher
        .publish(&t.topic("unsub/a"), "1", QoS::AtLeastOnce, false)
        .await?;
    let m = next(&mut rx, "before unsubscribing").await?;
    anyhow::ensure!(text(&m) == "1", "got {:?}", summary(&[m]));
    sub.unsubscribe(&t.topic("unsub/a")).await?;
    publisher
        .publish(&t.topic("unsub/a"), "2", QoS::AtLeastOnce, false)
        .await?;
    publisher
        .publish(&t.topic("unsub/b"), "3", QoS::AtLeastOnce, false)
        .await?;
    let got = until(&mut rx, &t.topic("unsub/b"), "after unsubscribing").await?;
    anyhow::ensure!(got.len() == 1, "still delivered: {:?}", summary(&got));
    publisher.disconnect().await;
    sub.disconnect().await;
    Ok(())
}

/// Members of a shared subscription `$share/g/filter` each get some of the messages and
/// every message goes to exactly one of them (5.0 section 4.8.2; the broker offers it
/// to 3.1.1 clients too).
pub async fn shared_subscription(t: Target) -> anyhow::Result<()> {
    let filter = format!("$share/g/{}", t.topic("shared/#"));
    let (m1, mut rx1) = t.connect("member1").await?;
    let (m2, mut rx2) = t.connect("member2").await?;
    for m in [&m1, &m2] {
        let code = m.subscribe(&filter, QoS::AtLeastOnce).await?;
        anyhow::ensure!(code == ReasonCode::GrantedQoS1, "SUBACK {code}");
    }
    let (publisher, _) = t.connect("pub").await?;
    const N: usize = 10;
    for i in 0..N {
        publisher
            .publish(&t.topic("shared/x"), i.to_string(), QoS::AtLeastOnce, false)
            .await?;
    }
    let (mut a, mut b) = (vec![], vec![]);
    while a.len() + b.len() < N {
        tokio::select! {
            m = next(&mut rx1, "shared member 1") => a.push(text(&m?)),
            m = next(&mut rx2, "shared member 2") => b.push(text(&m?)),
        }
    }
    let mut all: Vec<usize> = a.iter().chain(&b).map(|s| s.parse().unwrap_or(N)).collect();
    all.sort_unstable();
    anyhow::ensure!(
        all == (0..N).collect::<Vec<_>>(),
        "each message once: {a:?} + {b:?}"
    );
    anyhow::ensure!(
        !a.is_empty() && !b.is_empty(),
        "not distributed: {a:?} + {b:?}"
    );
    for c in [publisher, m1, m2] {
        c.disconnect().await;
    }
    Ok(())
}

/// A message matching two subscriptions of one client is delivered at the highest QoS
/// of them (3.1.1 [MQTT-3.3.5-1], 5.0 [MQTT-3.3.4-2]); 5.0 delivers one copy
/// ([MQTT-3.3.4-2]). (3.1.1 allows one copy per subscription.)
pub async fn overlapping_subscriptions(t: Target) -> anyhow::Result<()> {
    let (sub, mut rx) = t.connect("sub").await?;
    sub.subscribe(&t.topic("overlap/#"), QoS::AtMostOnce)
        .await?;
    sub.subscribe(&t.topic("overlap/+"), QoS::ExactlyOnce)
        .await?;
    let (publisher, _) = t.connect("pub").await?;
    publisher
        .publish(&t.topic("overlap/x"), "both", QoS::ExactlyOnce, false)
        .await?;
    // Matches only `overlap/#`.
    let marker = t.topic("overlap/x/end");
    publisher
        .publish(&marker, "end", QoS::AtLeastOnce, false)
        .await?;
    let got = until(&mut rx, &marker, "overlapping").await?;
    let copies: Vec<&Publish> = got.iter().filter(|m| text(m) == "both").collect();
    anyhow::ensure!(!copies.is_empty(), "not delivered: {:?}", summary(&got));
    anyhow::ensure!(
        copies.iter().any(|m| m.qos == QoS::ExactlyOnce),
        "not at the highest QoS: {:?}",
        summary(&got)
    );
    if t.v5() {
        anyhow::ensure!(copies.len() == 1, "copies: {:?}", summary(&got));
    }
    publisher.disconnect().await;
    sub.disconnect().await;
    Ok(())
}

/// A subscription the ACL denies gets SUBACK 0x80 (3.1.1 Failure, 5.0 Unspecified
/// error) and no messages; an allowed one in the same session works.
pub async fn acl_denied_subscription(t: Target) -> anyhow::Result<()> {
    let denied = format!("acl-denied/{}/#", t.tag);
    let (sub, mut rx) = t.connect("sub").await?;
    let code = sub.subscribe(&denied, QoS::AtLeastOnce).await?;
    anyhow::ensure!(
        code == ReasonCode::UnspecifiedError,
        "denied subscription: SUBACK {code}"
    );
    let code = sub.subscribe(&t.topic("acl/ok"), QoS::AtLeastOnce).await?;
    anyhow::ensure!(code == ReasonCode::GrantedQoS1, "allowed: SUBACK {code}");
    let (publisher, _) = t.connect("pub").await?;
    publisher
        .publish(
            &format!("acl-denied/{}/x", t.tag),
            "secret",
            QoS::AtLeastOnce,
            false,
        )
        .await?;
    publisher
        .publish(&t.topic("acl/ok"), "fine", QoS::AtLeastOnce, false)
        .await?;
    let got = until(&mut rx, &t.topic("acl/ok"), "allowed").await?;
    anyhow::ensure!(
        got.len() == 1,
        "denied filter delivered: {:?}",
        summary(&got)
    );
    publisher.disconnect().await;
    sub.disconnect().await;
    Ok(())
}

/// A wrong password is refused with CONNACK Bad User Name or Password (3.1.1 return
/// code 4, 5.0 0x86) and the connection closed ([MQTT-3.2.2-5]); the right one connects.
pub async fn authentication(t: Target) -> anyhow::Result<()> {
    let mut o = t.options("wrong");
    o.credentials = Some((USER.into(), b"wrong".to_vec()));
    match t.connect_with(o).await {
        Ok(_) => anyhow::bail!("a wrong password was accepted"),
        Err(e) => match e.downcast_ref::<ClientError>() {
            Some(ClientError::ConnectRefused(ReasonCode::BadUserNameOrPassword)) => {}
            _ => anyhow::bail!("wrong password: {e:#}"),
        },
    }
    let mut o = t.options("right");
    o.credentials = Some((USER.into(), PASSWORD.as_bytes().to_vec()));
    let (c, mut rx) = t.connect_with(o).await?;
    c.subscribe(&t.topic("auth"), QoS::AtLeastOnce).await?;
    c.publish(&t.topic("auth"), "in", QoS::AtLeastOnce, false)
        .await?;
    let m = next(&mut rx, "authenticated client").await?;
    anyhow::ensure!(text(&m) == "in", "got {:?}", summary(&[m]));
    c.disconnect().await;
    Ok(())
}
