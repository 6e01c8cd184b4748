//! Interop with rumqttc (crates.io), a Rust client no one here wrote: publish/subscribe at
//! QoS 0, 1 and 2 over MQTT 3.1.1 and 5.0, a retained message, and the broker's topic
//! aliases toward a 5.0 client that accepts them; against every broker (tokio, std
//! threads, smol, async-std; see `mqtt_tests::brokers`).

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

async fn rumqttc_v5_accepts_the_brokers_topic_aliases(rt: Runtime) {
    // 5.0: the client announces a Topic Alias Maximum of 2, so the broker (by default) maps
    // the first two topics to aliases 1 and 2 and later sends them as an empty topic name
    // with the alias; the third topic goes in full every time ([MQTT-3.3.2-11]). rumqttc
    // checks every alias against the ones it was given (an unknown one is a protocol
    // error) and hands the packets over as received, so the test maps them back as an
    // application would.
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let (running, port) = broker(rt).await;
    let mut o = MqttOptions::new("rumqttc-alias", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_topic_alias_max(Some(2));
    let (client, mut el) = AsyncClient::new(o, 32);
    client.subscribe("alias/#", QoS::AtLeastOnce).await.unwrap();
    let topics = ["alias/a", "alias/b", "alias/c"];
    for round in 0..2 {
        for t in topics {
            client
                .publish(t, QoS::AtLeastOnce, false, format!("{t} {round}"))
                .await
                .unwrap();
        }
    }
    let mut wire = vec![];
    let mut resolved = vec![];
    let mut aliases = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while wire.len() < 6 {
        let ev = tokio::time::timeout_at(deadline, el.poll())
            .await
            .expect("in time")
            .expect("rumqttc accepts every PUBLISH");
        if let Event::Incoming(Packet::Publish(p)) = ev {
            let topic = String::from_utf8_lossy(&p.topic).into_owned();
            let alias = p.properties.as_ref().and_then(|p| p.topic_alias);
            let full = match (topic.is_empty(), alias) {
                (false, Some(a)) => {
                    aliases.insert(a, topic.clone());
                    topic.clone()
                }
                (true, Some(a)) => aliases[&a].clone(),
                _ => topic.clone(),
            };
            wire.push((topic, alias));
            resolved.push((full, String::from_utf8_lossy(&p.payload).into_owned()));
        }
    }
    assert_eq!(
        wire,
        [
            ("alias/a".to_string(), Some(1)),
            ("alias/b".to_string(), Some(2)),
            ("alias/c".to_string(), None),
            (String::new(), Some(1)),
            (String::new(), Some(2)),
            ("alias/c".to_string(), None),
        ]
    );
    let want: Vec<(String, String)> = (0..2)
        .flat_map(|round| {
            topics
                .iter()
                .map(move |t| (t.to_string(), format!("{t} {round}")))
        })
        .collect();
    assert_eq!(resolved, want);
    running.shutdown().await;
}

mqtt_tests::for_each_broker!(
    rumqttc_v4_each_qos_and_retained,
    rumqttc_v5_each_qos,
    rumqttc_v5_accepts_the_brokers_topic_aliases
);
