//! The async client against the broker over TCP: publish waits for the acknowledgement,
//! messages arrive on a channel, and a lost connection is made again with the
//! subscriptions restored when the server lost the session.

use adapter_tokio::client::{Client, ClientOptions};
use adapter_tokio::config::Config;
use adapter_tokio::server::{start, Running};
use mqtt_proto::{ProtocolVersion, QoS, ReasonCode};
use std::time::Duration;

async fn broker(bind: &str) -> Running {
    let text = format!("[[listener]]\nbind = \"{bind}\"\n[sys]\ninterval_secs = 0\n");
    start(
        Config::parse(&format!("{text}\n[persistence]\nenabled = false\n")).unwrap(),
        None,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_each_qos() {
    let b = broker("127.0.0.1:0").await;
    let addr = b.local_addrs[0].to_string();
    for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut o = ClientOptions::new(&addr, &format!("sub-{v}"));
        o.version = v;
        let (sub, mut rx) = Client::connect(o).await.unwrap();
        assert_eq!(
            sub.subscribe("c/#", QoS::ExactlyOnce).await.unwrap(),
            ReasonCode::GrantedQoS2
        );
        let mut o = ClientOptions::new(&addr, &format!("pub-{v}"));
        o.version = v;
        let (publisher, _) = Client::connect(o).await.unwrap();
        for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            publisher
                .publish("c/x", format!("{q:?}"), q, false)
                .await
                .unwrap();
        }
        for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(m.qos, q);
            assert_eq!(m.payload, format!("{q:?}").as_bytes());
        }
        publisher.disconnect().await;
        sub.disconnect().await;
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resubscribes() {
    let b = broker("127.0.0.1:0").await;
    let addr = b.local_addrs[0];
    let mut o = ClientOptions::new(&addr.to_string(), "sticky");
    o.reconnect = Some(Duration::from_millis(100));
    let (sub, mut rx) = Client::connect(o).await.unwrap();
    sub.subscribe("r/#", QoS::AtLeastOnce).await.unwrap();
    // The broker goes away and a new one (which knows no session) takes its port.
    b.shutdown().await;
    let b = broker(&addr.to_string()).await;
    let (publisher, _) = Client::connect(ClientOptions::new(&addr.to_string(), "p"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            publisher
                .publish("r/1", "again", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                return m;
            }
        }
    })
    .await
    .expect("the client came back");
    assert_eq!(&got.payload[..], b"again");
    b.shutdown().await;
}
