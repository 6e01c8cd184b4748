//! Client addresses: the scheme chooses the transport.
//!
//! | address                   | transport          | default port |
//! |---------------------------|--------------------|-------------:|
//! | `mqtt://host:port`, `tcp://host:port` | TCP    | 1883 |
//! | `mqtts://host:port`, `ssl://host:port` | TLS   | 8883 |
//! | `ws://host:port/path`     | WebSocket          | 80 |
//! | `wss://host:port/path`    | WebSocket over TLS | 443 |
//! | `host:port`               | TCP, or TLS when the client has a TLS configuration | — |
//!
//! Without a path, a WebSocket address means `/mqtt`, the broker listener's default. An
//! IPv6 host is written in brackets: `ws://[::1]:8080/mqtt`.

/// The transport an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// MQTT over TCP.
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// WebSocket.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

/// A parsed client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The transport.
    pub scheme: Scheme,
    /// `host:port`, as `TcpStream::connect` takes it.
    pub authority: String,
    /// WebSocket: the HTTP path.
    pub path: String,
}

impl Endpoint {
    /// Parses an address; a bare `host:port` is TLS when `tls` is true.
    pub fn parse(address: &str, tls: bool) -> anyhow::Result<Self> {
        let (scheme, rest) = match address.split_once("://") {
            Some((s, rest)) => {
                let scheme = match s.to_ascii_lowercase().as_str() {
                    "mqtt" | "tcp" => Scheme::Tcp,
                    "mqtts" | "ssl" => Scheme::Tls,
                    "ws" => Scheme::Ws,
                    "wss" => Scheme::Wss,
                    _ => anyhow::bail!(
                        "{address}: unknown scheme `{s}` (mqtt, mqtts, tcp, ssl, ws, wss)"
                    ),
                };
                (scheme, rest)
            }
            None if tls => (Scheme::Tls, address),
            None => (Scheme::Tcp, address),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        anyhow::ensure!(!authority.is_empty(), "{address}: no host");
        // A port is after the last `:` that is not inside an IPv6 literal's brackets.
        let has_port = match authority.rfind(']') {
            Some(end) => authority[end..].contains(':'),
            None => authority.contains(':'),
        };
        let authority = if has_port {
            authority.to_string()
        } else {
            let port = match scheme {
                Scheme::Tcp => 1883,
                Scheme::Tls => 8883,
                Scheme::Ws => 80,
                Scheme::Wss => 443,
            };
            format!("{authority}:{port}")
        };
        let path = match scheme {
            Scheme::Ws | Scheme::Wss if path.is_empty() => "/mqtt".to_string(),
            Scheme::Ws | Scheme::Wss => path.to_string(),
            _ => {
                anyhow::ensure!(
                    path.is_empty() || path == "/",
                    "{address}: a path needs ws:// or wss://"
                );
                String::new()
            }
        };
        Ok(Self {
            scheme,
            authority,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(address: &str, tls: bool) -> (Scheme, String, String) {
        let e = Endpoint::parse(address, tls).unwrap();
        (e.scheme, e.authority, e.path)
    }

    #[test]
    fn the_scheme_chooses_the_transport() {
        let s = |x: &str| x.to_string();
        assert_eq!(
            ep("127.0.0.1:1883", false),
            (Scheme::Tcp, s("127.0.0.1:1883"), s(""))
        );
        assert_eq!(
            ep("127.0.0.1:8883", true),
            (Scheme::Tls, s("127.0.0.1:8883"), s(""))
        );
        assert_eq!(
            ep("mqtt://host", false),
            (Scheme::Tcp, s("host:1883"), s(""))
        );
        assert_eq!(ep("tcp://host:1", true), (Scheme::Tcp, s("host:1"), s("")));
        assert_eq!(
            ep("mqtts://host", true),
            (Scheme::Tls, s("host:8883"), s(""))
        );
        assert_eq!(ep("ssl://host:2/", true), (Scheme::Tls, s("host:2"), s("")));
        assert_eq!(
            ep("ws://host:8080/mqtt", false),
            (Scheme::Ws, s("host:8080"), s("/mqtt"))
        );
        assert_eq!(
            ep("ws://host", false),
            (Scheme::Ws, s("host:80"), s("/mqtt"))
        );
        assert_eq!(
            ep("WSS://host/x/y", true),
            (Scheme::Wss, s("host:443"), s("/x/y"))
        );
        assert_eq!(
            ep("ws://[::1]:9/", false),
            (Scheme::Ws, s("[::1]:9"), s("/"))
        );
        assert_eq!(
            ep("ws://[::1]/m", false),
            (Scheme::Ws, s("[::1]:80"), s("/m"))
        );
        assert!(Endpoint::parse("http://host", false).is_err());
        assert!(Endpoint::parse("mqtt://host/path", false).is_err());
        assert!(Endpoint::parse("ws:///mqtt", false).is_err());
    }
}
