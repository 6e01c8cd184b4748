//! The web console and its JSON API on the metrics listener, over plain HTTP: what it
//! shows of a connected client, its subscription and a retained message; disconnecting a
//! client by its percent-encoded id; basic auth against the password file; the console
//! off by default.

use adapter_tokio::client::{Client, ClientOptions};
use adapter_tokio::config::Config;
use adapter_tokio::server::{start, Running};
use mqtt_proto::QoS;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response: status code, headers (as text) and body.
struct Http {
    status: u16,
    head: String,
    body: String,
}

impl Http {
    fn json(&self) -> serde_json::Value {
        assert!(
            self.head.contains("Content-Type: application/json"),
            "{}",
            self.head
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str, headers: &str) -> Http {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("answered in time")
        .unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a head");
    let status = head[9..12].parse().unwrap();
    Http {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Http {
    request(addr, "GET", path, "").await
}

async fn broker(extra: &str) -> Running {
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nname = \"local\"\n[sys]\ninterval_secs = 0\n\
         [persistence]\nenabled = false\n{extra}"
    );
    start(Config::parse(&text).unwrap(), None).await.unwrap()
}

fn options(addr: SocketAddr, id: &str) -> ClientOptions {
    let mut o = ClientOptions::new(&addr.to_string(), id);
    o.reconnect = None;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_clients_subscriptions_and_retained_messages() {
    let running = broker("[metrics]\nbind = \"127.0.0.1:0\"\nconsole = true\n").await;
    let http = running.metrics_addr.unwrap();
    let mqtt = running.local_addrs[0];
    let (c, _messages) = Client::connect(options(mqtt, "room 1/sensor"))
        .await
        .unwrap();
    c.subscribe("rooms/+/temp", QoS::AtLeastOnce).await.unwrap();
    c.publish("rooms/1/temp", "21.5", QoS::AtLeastOnce, true)
        .await
        .unwrap();

    // The page and its files, from the binary.
    let page = get(http, "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.head.contains("Content-Type: text/html"),
        "{}",
        page.head
    );
    assert!(page.body.contains("console.js"));
    assert_eq!(get(http, "/console.js").await.status, 200);
    assert_eq!(get(http, "/console.css").await.status, 200);
    // The metrics are still there.
    let metrics = get(http, "/metrics").await;
    assert!(
        metrics.body.contains("mqtt_connections 1"),
        "{}",
        metrics.body
    );

    let o = get(http, "/api/overview").await.json();
    assert!(o["version"].as_str().unwrap().starts_with("mqtt-broker "));
    assert!(o["uptime_secs"].is_u64());
    assert_eq!(o["listeners"][0]["name"], "local");
    assert_eq!(o["listeners"][0]["addr"], mqtt.to_string());
    assert_eq!(o["listeners"][0]["protocol"], "tcp");
    assert_eq!(o["gauges"]["connections"], 1);
    assert_eq!(o["gauges"]["subscriptions"], 1);
    assert_eq!(o["gauges"]["retained"], 1);
    assert_eq!(o["stats"]["messages_received"], 1);
    assert_eq!(o["stats"]["messages_sent"], 1);
    assert_eq!(o["drops"]["queue_full"], 0);

    let clients = get(http, "/api/clients").await.json();
    assert_eq!(clients.as_array().unwrap().len(), 1);
    let client = &clients[0];
    assert_eq!(client["client_id"], "room 1/sensor");
    assert_eq!(client["listener"], "local");
    assert_eq!(client["protocol"], "5.0");
    assert_eq!(client["keep_alive_secs"], 30);
    assert!(client["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(client["connected_secs"].as_u64().unwrap() < 60);

    let sessions = get(http, "/api/sessions").await.json();
    assert_eq!(sessions[0]["client_id"], "room 1/sensor");
    assert_eq!(sessions[0]["online"], true);
    assert_eq!(sessions[0]["expiry_secs"], 3600);

    let subs = get(http, "/api/subscriptions").await.json();
    assert_eq!(subs[0]["filter"], "rooms/+/temp");
    assert_eq!(subs[0]["subscribers"][0]["client_id"], "room 1/sensor");
    assert_eq!(subs[0]["subscribers"][0]["qos"], 1);

    let retained = get(http, "/api/retained").await.json();
    assert_eq!(retained[0]["topic"], "rooms/1/temp");
    assert_eq!(retained[0]["payload"], "21.5");
    assert_eq!(retained[0]["size"], 4);
    assert_eq!(retained[0]["truncated"], false);

    // Unknown paths and methods.
    assert_eq!(get(http, "/api/nothing").await.status, 404);
    assert_eq!(request(http, "POST", "/api/clients", "").await.status, 405);
    let wrong_method = get(http, "/api/clients/x/disconnect").await;
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.head.contains("Allow: POST"));
    // Not HTTP at all.
    let mut s = TcpStream::connect(http).await.unwrap();
    s.write_all(b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");

    // Disconnect: unknown ids get 404, a known one (percent-encoded) goes.
    let none = request(http, "POST", "/api/clients/nobody/disconnect", "").await;
    assert_eq!(none.status, 404);
    assert!(none.json()["error"].as_str().unwrap().contains("nobody"));
    let cross = request(
        http,
        "POST",
        "/api/clients/room%201%2Fsensor/disconnect",
        "Origin: http://elsewhere.example\r\n",
    )
    .await;
    assert_eq!(cross.status, 403);
    let done = request(
        http,
        "POST",
        "/api/clients/room%201%2Fsensor/disconnect",
        "",
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.json()["disconnected"], "room 1/sensor");
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let clients = get(http, "/api/clients").await.json();
            if clients.as_array().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the client is gone");
    // Its session stays, offline, with its expiry counting down.
    let sessions = get(http, "/api/sessions").await.json();
    assert_eq!(sessions[0]["online"], false);
    assert!(sessions[0]["expires_in_secs"].as_u64().unwrap() <= 3600);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_guards_every_path() {
    let dir = std::env::temp_dir().join(format!("mqtt-console-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut passwords = adapter_tokio::auth::Passwords::parse("").unwrap();
    passwords.set("admin", "s3cret").unwrap();
    let file = dir.join("passwd");
    std::fs::write(&file, passwords.to_text()).unwrap();
    let running = broker(&format!(
        "[auth]\npassword_file = \"{}\"\n\
         [metrics]\nbind = \"127.0.0.1:0\"\nconsole = true\nbasic_auth = true\n",
        file.display()
    ))
    .await;
    let http = running.metrics_addr.unwrap();
    for path in ["/", "/api/overview", "/metrics"] {
        let r = get(http, path).await;
        assert_eq!(r.status, 401, "{path}");
        assert!(
            r.head
                .contains("WWW-Authenticate: Basic realm=\"mqtt-broker\""),
            "{}",
            r.head
        );
    }
    // admin:wrong, then admin:s3cret
    let wrong = "Authorization: Basic YWRtaW46d3Jvbmc=\r\n";
    let right = "Authorization: Basic YWRtaW46czNjcmV0\r\n";
    assert_eq!(
        request(http, "GET", "/api/overview", wrong).await.status,
        401
    );
    let r = request(http, "GET", "/api/overview", right).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["gauges"]["connections"], 0);
    assert_eq!(request(http, "GET", "/metrics", right).await.status, 200);
    // Any Host is served once the credentials are right.
    let mut s = TcpStream::connect(http).await.unwrap();
    s.write_all(
        format!("GET /api/clients HTTP/1.1\r\nHost: broker.example\r\n{right}\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_off_by_default_and_refused_in_public_without_credentials() {
    let running = broker("[metrics]\nbind = \"127.0.0.1:0\"\n").await;
    let http = running.metrics_addr.unwrap();
    assert_eq!(get(http, "/").await.status, 404);
    assert_eq!(get(http, "/api/overview").await.status, 404);
    assert_eq!(get(http, "/metrics").await.status, 200);
    running.shutdown().await;
    // A configuration built in code is checked at start as well.
    let mut config = Config::parse("[persistence]\nenabled = false").unwrap();
    config.metrics.bind = Some("0.0.0.0:0".parse().unwrap());
    config.metrics.console = true;
    let e = start(config, None).await.err().expect("refused");
    assert!(e.to_string().contains("metrics.console"), "{e}");
}
