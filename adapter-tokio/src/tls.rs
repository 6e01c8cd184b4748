//! TLS server configuration from PEM files, reloaded when the files change (or on
//! SIGHUP) without touching established connections: the shared
//! [`mqtt_adapter_common::tls`] watcher, with a tokio-rustls acceptor around its current
//! configuration.

pub use mqtt_adapter_common::tls::{client_identity, server_config, TlsFiles};
use tokio_rustls::TlsAcceptor;

/// A TLS acceptor whose configuration is swapped when the files change.
#[derive(Clone)]
pub struct Reloading(mqtt_adapter_common::tls::Reloading);

impl Reloading {
    /// Loads the files and starts watching them (every 5 s, and on SIGHUP).
    pub fn start(files: TlsFiles) -> anyhow::Result<Self> {
        Ok(Self(mqtt_adapter_common::tls::Reloading::start(files)?))
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.0.current())
    }
}
