//! TLS server configuration from PEM files, reloaded when the files change (or on
//! SIGHUP) without touching established connections.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// Where a listener's certificate, key and optional client CA live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// CA for client certificates (PEM); when set, clients must present one.
    pub client_ca: Option<PathBuf>,
}

/// Builds the rustls server configuration.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| anyhow::anyhow!("{}: {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", files.cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no certificate",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?
            {
                roots.add(c.map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", files.key.display()))?;
    Ok(Arc::new(cfg))
}

/// A TLS acceptor whose configuration is swapped when the files change.
#[derive(Clone)]
pub struct Reloading {
    current: Arc<RwLock<TlsAcceptor>>,
}

impl Reloading {
    /// Loads the files and starts watching them (every 5 s, and on SIGHUP).
    pub fn start(files: TlsFiles) -> anyhow::Result<Self> {
        let acceptor = TlsAcceptor::from(server_config(&files)?);
        let r = Self {
            current: Arc::new(RwLock::new(acceptor)),
        };
        let watcher = r.clone();
        tokio::spawn(async move { watcher.watch(files).await });
        Ok(r)
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().expect("not poisoned").clone()
    }

    async fn watch(self, files: TlsFiles) {
        let stamp = |f: &TlsFiles| -> Vec<Option<SystemTime>> {
            [Some(&f.cert), Some(&f.key), f.client_ca.as_ref()]
                .into_iter()
                .flatten()
                .map(|p: &PathBuf| modified(p))
                .collect()
        };
        let mut last = stamp(&files);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let forced = tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => false,
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
            };
            #[cfg(not(unix))]
            let forced = {
                tokio::time::sleep(Duration::from_secs(5)).await;
                false
            };
            let now = stamp(&files);
            if now == last && !forced {
                continue;
            }
            last = now;
            match server_config(&files) {
                Ok(cfg) => {
                    *self.current.write().expect("not poisoned") = TlsAcceptor::from(cfg);
                    info!(cert = %files.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => warn!("TLS reload failed, keeping the old certificate: {e}"),
            }
        }
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}
