//! Embedding the broker in an application: a connection validator, a publish
//! interceptor, an event handler and server-side publishing.
//!
//! `cargo run -p adapter-tokio --example embed`, then for example
//! `mosquitto_sub -t 'greetings/#' -v` and `mosquitto_pub -t chat -m hi`.

use adapter_tokio::config::Config;
use adapter_tokio::server::start_with;
use mqtt_broker::{BrokerEvent, ConnInfo, Hooks, PublishDecision};
use mqtt_proto::{Connect, Publish, QoS, ReasonCode, TopicName};
use tokio::sync::mpsc;

struct App;

impl Hooks for App {
    /// Refuse clients whose id starts with "guest-" on any listener but the local one.
    fn validate_connection(&mut self, info: &ConnInfo, c: &Connect) -> Result<(), ReasonCode> {
        if c.client_id.starts_with("guest-") && !info.peer.starts_with("127.") {
            return Err(ReasonCode::NotAuthorized);
        }
        Ok(())
    }

    /// Stamp chat messages; drop anything sent to `blackhole/#`.
    fn intercept_publish(&mut self, client_id: &str, p: &mut Publish) -> PublishDecision {
        if p.topic.starts_with("blackhole/") {
            return PublishDecision::Drop;
        }
        if p.topic.as_str() == "chat" {
            let text = String::from_utf8_lossy(&p.payload).into_owned();
            p.payload = format!("{client_id}: {text}").into();
        }
        PublishDecision::Accept
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (events_tx, mut events) = mpsc::channel(1024);
    let running = start_with(Config::default(), Some(Box::new(App)), Some(events_tx)).await?;
    println!("broker on {:?}", running.local_addrs);
    while let Some(e) = events.recv().await {
        match e {
            BrokerEvent::ClientConnected { client_id, .. } => {
                // Server-side publish: greet every client.
                let mut p = Publish::new(
                    TopicName::new(&format!("greetings/{client_id}"))?,
                    format!("welcome, {client_id}"),
                );
                p.qos = QoS::AtLeastOnce;
                running.publish(p).await?;
            }
            BrokerEvent::ClientDisconnected {
                client_id, reason, ..
            } => {
                println!("{client_id:?} left: {reason:?}");
            }
            BrokerEvent::MessageReceived {
                publish, receivers, ..
            } => {
                println!("{} -> {receivers} receivers", publish.topic);
            }
            _ => {}
        }
    }
    Ok(())
}
