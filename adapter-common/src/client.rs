//! What the clients of every adapter share: their options and the CONNECT packet those
//! make. The session itself is `mqtt_session::Connection` in the client role.

use bytes::Bytes;
use mqtt_proto::{Connect, MqttString, ProtocolVersion, QoS, TopicName, Will};
use mqtt_session::Config;
use std::time::Duration;

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Where, and over which transport: `mqtt://host:port`, `mqtts://host:port`,
    /// `ws://host:port/path`, `wss://host:port/path`, or a bare `host:port` (see
    /// [`endpoint`](crate::endpoint)).
    pub address: String,
    /// Protocol version: 3.1.1 or 5.0. Default 5.0.
    pub version: ProtocolVersion,
    /// Client identifier.
    pub client_id: String,
    /// Keep-alive in seconds. Default 30.
    pub keep_alive: u16,
    /// Start a new session on the first connection: Clean Start (5.0) / Clean Session
    /// (3.1.1). Default false: the server keeps the session across reconnects (5.0: for
    /// [`session_expiry`](Self::session_expiry); 3.1.1: as long as the server keeps
    /// persistent sessions). Reconnects always ask to resume.
    pub clean_start: bool,
    /// 5.0 Session Expiry Interval in seconds. Default 3600.
    pub session_expiry: u32,
    /// User name and password.
    pub credentials: Option<(String, Vec<u8>)>,
    /// The will: published by the server when the connection ends without DISCONNECT
    /// (or, 5.0, with DISCONNECT 0x04). See [`set_will`](Self::set_will).
    pub will: Option<Will>,
    /// Reconnect after a lost connection, waiting this long between tries. Default 1 s;
    /// `None` turns reconnecting off. (The tokio client reconnects; the blocking and
    /// smol clients end with the connection and ignore it.)
    pub reconnect: Option<Duration>,
    /// Protocol limits of the session.
    pub session: Config,
    /// TLS for `mqtts://` and `wss://` (and a bare `host:port`): the rustls client
    /// configuration and the server name to verify.
    pub tls: Option<(std::sync::Arc<rustls::ClientConfig>, String)>,
}

impl ClientOptions {
    /// Options with the defaults.
    pub fn new(address: &str, client_id: &str) -> Self {
        Self {
            address: address.into(),
            version: ProtocolVersion::V5,
            client_id: client_id.into(),
            keep_alive: 30,
            clean_start: false,
            session_expiry: 3600,
            credentials: None,
            will: None,
            reconnect: Some(Duration::from_secs(1)),
            session: Config::default(),
            tls: None,
        }
    }

    /// Sets the will message (5.0 properties left at their defaults; set them on
    /// [`will`](Self::will) if needed).
    pub fn set_will(
        &mut self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), mqtt_proto::TopicError> {
        self.will = Some(Will {
            topic: TopicName::new(topic)?,
            payload: payload.into(),
            qos,
            retain,
            properties: Default::default(),
        });
        Ok(())
    }

    /// The CONNECT packet of these options; `clean_start` for this connection.
    pub fn connect_packet(&self, clean_start: bool) -> anyhow::Result<Connect> {
        let mut c = Connect::new(self.version, MqttString::new(&self.client_id)?);
        c.clean_start = clean_start;
        c.keep_alive = self.keep_alive;
        if self.version.is_v5() {
            c.properties.session_expiry_interval = Some(self.session_expiry);
        }
        if let Some((u, p)) = &self.credentials {
            c.username = Some(MqttString::new(u)?);
            c.password = Some(Bytes::copy_from_slice(p));
        }
        c.will = self.will.clone().map(Box::new);
        Ok(c)
    }
}
