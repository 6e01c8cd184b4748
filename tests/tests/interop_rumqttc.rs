//! Interop with rumqttc (crates.io), a Rust client no one here wrote: publish/subscribe at
//! QoS 0, 1 and 2 over MQTT 3.1.1 and 5.0, and a retained message; against every broker
//! (tokio, std threads, smol, async-std; see `mqtt_tests::brokers`).

use mqtt_tests::brokers::{Broker, Runtime};
use std::time::Duration;

async fn broker(rt: Runtime) -> (Broker, u16) {
    let text = "[[listener]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n";
    let r = Broker::start(rt, text).await;
    let port = r.port();
    (r, port)
}

async fn rumqttc_v4_each_qos_and_retained(rt: Runtime) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let (running, port) = broker(rt).await;
    let mut o = MqttOptions::new("rumqttc-v4", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 32);
    client
        .publish("v4/r", QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    client.subscribe("v4/#", QoS::ExactlyOnce).await.unwrap();
    for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        client
            .publish("v4/x", q, false, format!("{q:?}"))
            .await
            .unwrap();
    }
    let mut got = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 4 {
        let ev = tokio::time::timeout_at(deadline, el.poll())
            .await
            .expect("in time")
            .unwrap();
        if let Event::Incoming(Packet::Publish(p)) = ev {
            got.push((
                p.topic,
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.qos,
                p.retain,
            ));
        }
    }
    assert_eq!(
        got[0],
        ("v4/r".into(), "kept".into(), QoS::AtLeastOnce, true)
    );
    assert_eq!(
        got[1..],
        [
            ("v4/x".into(), "AtMostOnce".into(), QoS::AtMostOnce, false),
            ("v4/x".into(), "AtLeastOnce".into(), QoS::AtLeastOnce, false),
            ("v4/x".into(), "ExactlyOnce".into(), QoS::ExactlyOnce, false),
        ]
    );
    running.shutdown().await;
}

async fn rumqttc_v5_each_qos(rt: Runtime) {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let (running, port) = broker(rt).await;
    let mut o = MqttOptions::new("rumqttc-v5", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 32);
    client.subscribe("v5/#", QoS::ExactlyOnce).await.unwrap();
    for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        client
            .publish("v5/x", q, false, format!("{q:?}"))
            .await
            .unwrap();
    }
    let mut got = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 3 {
        let ev = tokio::time::timeout_at(deadline, el.poll())
            .await
            .expect("in time")
            .unwrap();
        if let Event::Incoming(Packet::Publish(p)) = ev {
            got.push((String::from_utf8_lossy(&p.payload).into_owned(), p.qos));
        }
    }
    assert_eq!(
        got,
        [
            ("AtMostOnce".into(), QoS::AtMostOnce),
            ("AtLeastOnce".into(), QoS::AtLeastOnce),
            ("ExactlyOnce".into(), QoS::ExactlyOnce),
        ]
    );
    running.shutdown().await;
}

mqtt_tests::for_each_broker!(rumqttc_v4_each_qos_and_retained, rumqttc_v5_each_qos);
