//! TLS server configuration from PEM files, reloaded when the files change (or on
//! SIGHUP) without touching established connections, and the identity in a client
//! certificate.
//!
//! The watcher is a plain thread: it stats the files every 5 seconds and looks at a
//! SIGHUP flag every 250 ms; a new configuration is swapped in for the connections
//! accepted after it. Each adapter wraps [`Reloading::current`] in its runtime's
//! acceptor (`tokio_rustls::TlsAcceptor`, `futures_rustls::TlsAcceptor`, or a
//! `rustls::ServerConnection` on a blocking socket).

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};
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

impl TlsFiles {
    /// The files of a `tls` or `wss` listener.
    pub fn of(l: &crate::config::Listener) -> Self {
        Self {
            cert: l.cert.clone().unwrap_or_default(),
            key: l.key.clone().unwrap_or_default(),
            client_ca: l.client_ca.clone(),
        }
    }
}

/// The crypto provider every adapter uses (ring: builds without a C toolchain beyond cc).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls server configuration.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = provider();
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

/// A server configuration that a watcher thread swaps when the files change.
#[derive(Clone)]
pub struct Reloading {
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

/// How often the watcher looks at the SIGHUP flag, and how many of those make a stat of
/// the files.
const TICK: Duration = Duration::from_millis(250);
const TICKS_PER_STAT: u32 = 20;

impl Reloading {
    /// Loads the files and starts watching them (every 5 s, and on SIGHUP). The watcher
    /// thread ends once every clone of the returned value is dropped.
    pub fn start(files: TlsFiles) -> anyhow::Result<Self> {
        let r = Self {
            current: Arc::new(RwLock::new(server_config(&files)?)),
        };
        let weak = Arc::downgrade(&r.current);
        let hup = sighup_flag();
        std::thread::Builder::new()
            .name("tls-reload".into())
            .spawn(move || watch(weak, files, hup))?;
        Ok(r)
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().expect("not poisoned").clone()
    }
}

fn watch(current: Weak<RwLock<Arc<ServerConfig>>>, files: TlsFiles, hup: Arc<AtomicBool>) {
    let stamp = |f: &TlsFiles| -> Vec<Option<SystemTime>> {
        [Some(&f.cert), Some(&f.key), f.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p: &PathBuf| modified(p))
            .collect()
    };
    let mut last = stamp(&files);
    let mut ticks = 0;
    loop {
        std::thread::sleep(TICK);
        if current.strong_count() == 0 {
            return;
        }
        ticks += 1;
        // Every watcher has a flag of its own, so each sees every SIGHUP.
        let forced = hup.swap(false, Ordering::Relaxed);
        if !forced && ticks < TICKS_PER_STAT {
            continue;
        }
        ticks = 0;
        let now = stamp(&files);
        if now == last && !forced {
            continue;
        }
        last = now;
        match server_config(&files) {
            Ok(cfg) => {
                let Some(current) = current.upgrade() else {
                    return;
                };
                *current.write().expect("not poisoned") = cfg;
                info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => warn!("TLS reload failed, keeping the old certificate: {e}"),
        }
    }
}

/// A flag set on SIGHUP (never set where there are no signals).
fn sighup_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, flag.clone()) {
        warn!("SIGHUP cannot reload certificates: {e}");
    }
    flag
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The Common Name of the verified client certificate.
pub fn client_identity(tls: &rustls::ServerConnection) -> anyhow::Result<String> {
    let der = tls
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| anyhow::anyhow!("no client certificate"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("client certificate: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| anyhow::anyhow!("client certificate without a Common Name"))?;
    Ok(cn.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn write_certificate(dir: &Path) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    }

    fn swapped(r: &Reloading, old: &Arc<ServerConfig>, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !Arc::ptr_eq(old, &r.current()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn reloads_on_sighup_and_when_the_files_change() {
        let dir = std::env::temp_dir().join(format!("mqtt-tls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_certificate(&dir);
        let r = Reloading::start(TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: None,
        })
        .unwrap();
        let first = r.current();
        #[cfg(unix)]
        {
            signal_hook::low_level::raise(signal_hook::consts::SIGHUP).unwrap();
            assert!(swapped(&r, &first, Duration::from_secs(5)), "SIGHUP");
        }
        let second = r.current();
        write_certificate(&dir);
        assert!(swapped(&r, &second, Duration::from_secs(10)), "new files");
        // A broken file keeps the configuration there is.
        std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
        let third = r.current();
        assert!(!swapped(&r, &third, Duration::from_secs(6)));
        let _ = std::fs::remove_dir_all(dir);
    }
}
