//! The web console's JSON API on every broker (tokio, std threads, smol, async-std): the
//! same answers for a connected client, its subscription and a retained message, a
//! disconnect by id, and the console off by default. The tokio broker's own test
//! (`adapter-tokio/tests/console.rs`) covers basic auth and the error answers.

use adapter_tokio::client::{Client, ClientOptions};
use mqtt_proto::QoS;
use mqtt_tests::brokers::{Broker, Runtime};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("answered in time")
        .unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a head");
    (head[9..12].parse().unwrap(), body.to_string())
}

async fn json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = request(addr, "GET", path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn console_api(rt: Runtime) {
    let broker = Broker::start(
        rt,
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n\
         [metrics]\nbind = \"127.0.0.1:0\"\nconsole = true\n",
    )
    .await;
    let http = broker.metrics_addr().unwrap();
    let mut options = ClientOptions::new(&broker.local_addrs()[0].to_string(), "probe/1");
    options.reconnect = None;
    let (c, _messages) = Client::connect(options).await.unwrap();
    c.subscribe("probe/+/in", QoS::ExactlyOnce).await.unwrap();
    c.publish("probe/1/state", "on", QoS::AtLeastOnce, true)
        .await
        .unwrap();

    let (status, page) = request(http, "GET", "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("console.js"));
    let o = json(http, "/api/overview").await;
    assert_eq!(o["gauges"]["connections"], 1);
    assert_eq!(
        o["listeners"][0]["addr"],
        broker.local_addrs()[0].to_string()
    );
    let clients = json(http, "/api/clients").await;
    assert_eq!(clients[0]["client_id"], "probe/1");
    assert_eq!(clients[0]["protocol"], "5.0");
    let subs = json(http, "/api/subscriptions").await;
    assert_eq!(subs[0]["filter"], "probe/+/in");
    assert_eq!(subs[0]["subscribers"][0]["qos"], 2);
    let retained = json(http, "/api/retained").await;
    assert_eq!(retained[0]["topic"], "probe/1/state");
    assert_eq!(retained[0]["payload"], "on");

    let (status, _) = request(http, "POST", "/api/clients/nobody/disconnect").await;
    assert_eq!(status, 404);
    let (status, body) = request(http, "POST", "/api/clients/probe%2F1/disconnect").await;
    assert_eq!(status, 200, "{body}");
    tokio::time::timeout(Duration::from_secs(5), async {
        while broker.gauges().await.unwrap().connections > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the client was disconnected");
    let sessions = json(http, "/api/sessions").await;
    assert_eq!(sessions[0]["online"], false);
    broker.shutdown().await;
}

async fn console_off_by_default(rt: Runtime) {
    let broker = Broker::start(
        rt,
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[metrics]\nbind = \"127.0.0.1:0\"\n",
    )
    .await;
    let http = broker.metrics_addr().unwrap();
    assert_eq!(request(http, "GET", "/").await.0, 404);
    assert_eq!(request(http, "GET", "/api/clients").await.0, 404);
    let (status, metrics) = request(http, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("mqtt_connections 0"), "{metrics}");
    broker.shutdown().await;
}

mqtt_tests::for_each_broker!(console_api, console_off_by_default);
