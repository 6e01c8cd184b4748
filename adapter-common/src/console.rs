//! The web console and its JSON API, served on the metrics listener next to
//! `GET /metrics` when `[metrics] console = true`: everything but the sockets.
//!
//! An adapter's HTTP endpoint does, for each connection:
//!
//! ```text
//! read until parse_request(buf) is not Partial   (at most MAX_REQUEST bytes, READ_TIMEOUT)
//! if console.needs_auth() and not console.authorized(req.authorization, now)   (slow: off
//!     the core, on a blocking thread)                -> write unauthorized()
//! match console.route(&req)
//!     Route::Respond(r) -> write r                    (pages, errors)
//!     Route::Metrics    -> Input::Metrics to the core -> write metrics_response(text)
//!     Route::Query(q)   -> Input::Console(q) to the core, which calls query(broker, now, q)
//!                        -> write console.answer(answer)
//! (the write within WRITE_TIMEOUT; at most MAX_CONNECTIONS at once)
//! ```
//!
//! The core only collects data ([`query`]); the JSON is written off its thread
//! ([`Console::answer`]). The page (`console/` beside this crate's sources) is plain
//! HTML, CSS and JavaScript built into the binary: no build step, nothing fetched from
//! elsewhere, so it works offline. It polls the API every two seconds; the rates and their
//! chart come from the differences of the counters between two polls.
//!
//! The API (documented in `CONSOLE.md`): `GET /api/overview`, `/api/clients`,
//! `/api/sessions`, `/api/subscriptions`, `/api/retained`, and
//! `POST /api/clients/{client id}/disconnect` (the id percent-encoded).

use crate::auth::Passwords;
use mqtt_broker::{Broker, Gauges, QueueGauges, Stats};
use mqtt_proto::{ProtocolVersion, ReasonCode};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest request read (request line and headers; a body is not read).
pub const MAX_REQUEST: usize = 8 * 1024;

/// How long a client may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to read the response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Retained payloads are shown up to this many bytes.
pub const PAYLOAD_PREVIEW: usize = 256;

/// How long a checked `Authorization` header is trusted without hashing the password
/// again (the page polls every two seconds; argon2 is slow on purpose).
const AUTH_CACHE_TTL: Duration = Duration::from_secs(300);

/// How many checked headers are remembered.
const AUTH_CACHE_SIZE: usize = 64;

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_CSS: &str = include_str!("../console/console.css");
const CONSOLE_JS: &str = include_str!("../console/console.js");

/// A parsed HTTP request: what the console needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target, query string included.
    pub target: String,
    /// The `Host` header.
    pub host: Option<String>,
    /// The `Origin` header (browsers send it with a `POST`).
    pub origin: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

/// What [`parse_request`] made of the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The headers are not complete yet: read more (up to [`MAX_REQUEST`]).
    Partial,
    /// A complete request head.
    Request(Request),
    /// Not HTTP, or too large: answer with this and close.
    Bad(Response),
}

/// Parses a request head (with `httparse`). More than [`MAX_REQUEST`] bytes without the
/// end of the headers is an error, as is anything that is not HTTP/1.x.
pub fn parse_request(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => Parsed::Partial,
        Ok(httparse::Status::Partial) => Parsed::Bad(Response::text(431, "request too large\n")),
        Ok(httparse::Status::Complete(_)) => {
            let header = |name: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .map(|v| v.trim().to_string())
            };
            Parsed::Request(Request {
                method: req.method.unwrap_or_default().to_string(),
                target: req.path.unwrap_or_default().to_string(),
                host: header("host"),
                origin: header("origin"),
                authorization: header("authorization"),
            })
        }
        Err(httparse::Error::TooManyHeaders) => {
            Parsed::Bad(Response::text(431, "too many headers\n"))
        }
        Err(_) => Parsed::Bad(Response::text(400, "bad request\n")),
    }
}

/// Reads a request head from a blocking stream (whose read timeout the caller set),
/// up to [`MAX_REQUEST`] bytes: `None` if the peer closed or the read failed first.
pub fn read_request(s: &mut impl std::io::Read) -> Option<Result<Request, Response>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_request(&buf) {
            Parsed::Partial => {}
            Parsed::Request(r) => return Some(Ok(r)),
            Parsed::Bad(r) => return Some(Err(r)),
        }
    }
}

/// How many of something may run at once (HTTP connections, password checks), for
/// adapters without a semaphore of their own.
#[derive(Debug)]
pub struct Limit {
    running: std::sync::atomic::AtomicUsize,
    max: usize,
}

/// One place taken in a [`Limit`], given back on drop.
#[derive(Debug)]
pub struct Taken(Arc<Limit>);

impl Drop for Taken {
    fn drop(&mut self) {
        self.0
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Limit {
    /// At most `max` at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            running: std::sync::atomic::AtomicUsize::new(0),
            max,
        })
    }

    /// A place, or `None` when all are taken.
    pub fn try_take(self: &Arc<Self>) -> Option<Taken> {
        use std::sync::atomic::Ordering;
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Taken(self.clone()))
    }
}

/// Open HTTP connections an adapter serves at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;

/// An HTTP response; the connection closes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Further header lines (`Name: value`).
    pub headers: Vec<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            headers: vec![],
            body: body.into(),
        }
    }

    fn text(status: u16, body: &str) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }

    fn json(status: u16, value: &impl Serialize) -> Self {
        match serde_json::to_vec_pretty(value) {
            Ok(body) => Self::new(status, "application/json", body),
            Err(e) => Self::text(500, &format!("{e}\n")),
        }
    }

    fn error(status: u16, message: &str) -> Self {
        Self::json(status, &serde_json::json!({ "error": message }))
    }

    /// The bytes to write: status line, headers, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "",
        };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        for h in &self.headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// The Prometheus text as a response.
pub fn metrics_response(text: String) -> Response {
    Response::new(200, "text/plain; version=0.0.4", text)
}

/// The answer to a request without valid credentials.
pub fn unauthorized() -> Response {
    let mut r = Response::text(401, "credentials needed\n");
    r.headers
        .push("WWW-Authenticate: Basic realm=\"mqtt-broker\", charset=\"UTF-8\"".into());
    r
}

/// The answer when the broker is stopping or too busy to answer.
pub fn unavailable() -> Response {
    Response::text(503, "unavailable\n")
}

/// A listener, as the overview shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerInfo {
    /// Its name (default: the bind address).
    pub name: String,
    /// The address it is bound to.
    pub addr: String,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub protocol: String,
}

/// What a request asks of the core.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Query {
    /// `GET /api/overview`.
    Overview,
    /// `GET /api/clients`.
    Clients,
    /// `GET /api/sessions`.
    Sessions,
    /// `GET /api/subscriptions`.
    Subscriptions,
    /// `GET /api/retained`.
    Retained,
    /// `POST /api/clients/{id}/disconnect`: the client id, decoded.
    Disconnect(String),
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Answered without the core: a page, or an error.
    Respond(Response),
    /// `GET /metrics`: the Prometheus text from the core ([`metrics_response`]).
    Metrics,
    /// A question for the core ([`query`]), answered with [`Console::answer`].
    Query(Query),
}

/// The console's settings and its cache of checked credentials, shared by an adapter's
/// HTTP connections.
#[derive(Debug)]
pub struct Console {
    enabled: bool,
    /// Answer only requests addressed to an IP address or localhost.
    local_names_only: bool,
    passwords: Option<Arc<Passwords>>,
    listeners: Vec<ListenerInfo>,
    checked: Mutex<HashMap<u64, Instant>>,
    hasher: RandomState,
}

impl Console {
    /// The console of a configuration: on with `metrics.console`, asking for
    /// credentials (every path, `/metrics` too) when `passwords` is given (with
    /// `metrics.basic_auth`). `listeners` are shown in the overview.
    pub fn new(
        enabled: bool,
        passwords: Option<Arc<Passwords>>,
        listeners: Vec<ListenerInfo>,
    ) -> Self {
        Self {
            enabled,
            local_names_only: passwords.is_none(),
            passwords,
            listeners,
            checked: Mutex::new(HashMap::new()),
            hasher: RandomState::new(),
        }
    }

    /// The console of a configuration and its bound listeners (`addrs`, in the order of
    /// `config.listeners`).
    pub fn from_config(
        config: &crate::config::Config,
        passwords: Option<Arc<Passwords>>,
        addrs: &[std::net::SocketAddr],
    ) -> Self {
        let listeners = config
            .listeners
            .iter()
            .zip(addrs)
            .map(|(l, a)| ListenerInfo {
                name: l.name.clone().unwrap_or_else(|| a.to_string()),
                addr: a.to_string(),
                protocol: l.protocol.clone(),
            })
            .collect();
        let passwords = passwords.filter(|_| config.metrics.basic_auth);
        let mut console = Self::new(config.metrics.console, passwords, listeners);
        // A console opened to the network on purpose (`allow_public_console`) is reached
        // by whatever name the network gives it.
        if !config.metrics.bind.is_some_and(|b| b.ip().is_loopback()) {
            console.local_names_only = false;
        }
        console
    }

    /// Whether requests need credentials.
    pub fn needs_auth(&self) -> bool {
        self.passwords.is_some()
    }

    /// Whether an `Authorization: Basic ...` header names a user of the password file
    /// with its password. Slow on purpose (argon2) the first time a header is seen: call
    /// it off the core and off an async executor's threads. A header that passed is
    /// trusted for five minutes (only its keyed hash is kept).
    pub fn authorized(&self, authorization: Option<&str>, now: Instant) -> bool {
        let Some(passwords) = &self.passwords else {
            return true;
        };
        let Some(header) = authorization else {
            return false;
        };
        let key = self.hasher.hash_one(header);
        {
            let checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked
                .get(&key)
                .is_some_and(|at| now.saturating_duration_since(*at) < AUTH_CACHE_TTL)
            {
                return true;
            }
        }
        let Some((user, password)) = basic_credentials(header) else {
            return false;
        };
        if !passwords.verify(&user, password.as_bytes()) {
            return false;
        }
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.len() >= AUTH_CACHE_SIZE {
            checked.retain(|_, at| now.saturating_duration_since(*at) < AUTH_CACHE_TTL);
            if checked.len() >= AUTH_CACHE_SIZE {
                checked.clear();
            }
        }
        checked.insert(key, now);
        true
    }

    /// Where a request goes (credentials are checked before, with
    /// [`authorized`](Self::authorized)).
    pub fn route(&self, req: &Request) -> Route {
        let path = req.target.split(['?', '#']).next().unwrap_or_default();
        if path == "/metrics" {
            return match req.method.as_str() {
                "GET" => Route::Metrics,
                _ => Route::Respond(not_allowed("GET")),
            };
        }
        if !self.enabled {
            return Route::Respond(Response::text(404, "not found\n"));
        }
        // On loopback without credentials the console answers only requests addressed to
        // an IP address or localhost: a page elsewhere that points its own name at this
        // machine's loopback address (DNS rebinding) gets nothing.
        if self.local_names_only && !req.host.as_deref().is_some_and(is_local_host) {
            return Route::Respond(Response::text(
                403,
                "the Host header must be an IP address or localhost\n",
            ));
        }
        let get = |r: Route| match req.method.as_str() {
            "GET" => r,
            _ => Route::Respond(not_allowed("GET")),
        };
        let asset =
            |content_type, body: &str| get(Route::Respond(Response::new(200, content_type, body)));
        match path {
            "/" | "/index.html" => asset("text/html; charset=utf-8", INDEX_HTML),
            "/console.css" => asset("text/css; charset=utf-8", CONSOLE_CSS),
            "/console.js" => asset("text/javascript; charset=utf-8", CONSOLE_JS),
            "/api/overview" => get(Route::Query(Query::Overview)),
            "/api/clients" => get(Route::Query(Query::Clients)),
            "/api/sessions" => get(Route::Query(Query::Sessions)),
            "/api/subscriptions" => get(Route::Query(Query::Subscriptions)),
            "/api/retained" => get(Route::Query(Query::Retained)),
            _ => {
                let Some(id) = path
                    .strip_prefix("/api/clients/")
                    .and_then(|p| p.strip_suffix("/disconnect"))
                else {
                    return Route::Respond(Response::error(404, "not found"));
                };
                if req.method != "POST" {
                    return Route::Respond(not_allowed("POST"));
                }
                // A page on another site cannot make the browser disconnect clients.
                if let Some(origin) = &req.origin {
                    let host = origin.split_once("://").map(|(_, h)| h);
                    if host.is_none() || host != req.host.as_deref() {
                        return Route::Respond(Response::error(
                            403,
                            "cross-origin request refused",
                        ));
                    }
                }
                match percent_decode(id) {
                    Some(id) => Route::Query(Query::Disconnect(id)),
                    None => Route::Respond(Response::error(
                        400,
                        "the client id is not valid percent-encoded UTF-8",
                    )),
                }
            }
        }
    }

    /// The core's answer as a JSON response (written off the core's thread).
    pub fn answer(&self, answer: Answer) -> Response {
        match answer {
            Answer::Overview(mut o) => {
                o.listeners = self.listeners.clone();
                Response::json(200, &o)
            }
            Answer::Clients(v) => Response::json(200, &v),
            Answer::Sessions(v) => Response::json(200, &v),
            Answer::Subscriptions(v) => Response::json(200, &v),
            Answer::Retained(v) => Response::json(200, &v),
            Answer::Disconnected(id, true) => {
                Response::json(200, &serde_json::json!({ "disconnected": id }))
            }
            Answer::Disconnected(id, false) => {
                Response::error(404, &format!("no connected client with id `{id}`"))
            }
        }
    }
}

fn not_allowed(allow: &str) -> Response {
    let mut r = Response::error(405, "method not allowed");
    r.headers.push(format!("Allow: {allow}"));
    r
}

/// Whether a `Host` header names an IP address or localhost (with or without a port).
fn is_local_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((ip, _)) => return ip.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// `Basic base64(user:password)` to its user and password.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = data_encoding::BASE64.decode(value.trim().as_bytes()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The core's answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// Broker-wide figures.
    Overview(Box<Overview>),
    /// Connected clients.
    Clients(Vec<Client>),
    /// Sessions, online and offline.
    Sessions(Vec<Session>),
    /// Subscriptions by topic filter.
    Subscriptions(Vec<FilterSubscriptions>),
    /// Retained messages.
    Retained(Vec<Retained>),
    /// Whether the client was connected (and is now being disconnected).
    Disconnected(String, bool),
}

/// `GET /api/overview`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overview {
    /// The broker's name and version.
    pub version: String,
    /// Seconds since the broker started.
    pub uptime_secs: u64,
    /// The MQTT listeners.
    pub listeners: Vec<ListenerInfo>,
    /// Current sizes.
    pub gauges: GaugesJson,
    /// Counters since the start.
    pub stats: StatsJson,
    /// Messages dropped, by cause, since the start.
    pub drops: Drops,
}

/// Current sizes in the overview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GaugesJson {
    /// Open connections (including those not yet past CONNECT).
    pub connections: usize,
    /// Sessions, online and offline.
    pub sessions: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// Retained messages.
    pub retained: usize,
    /// Messages waiting to be sent, all sessions together.
    pub queued_messages: usize,
    /// Payload bytes of those messages.
    pub queued_bytes: usize,
    /// Messages sent and not acknowledged yet.
    pub inflight_messages: usize,
    /// Payload bytes queued for offline sessions.
    pub offline_queued_bytes: usize,
}

/// Counters in the overview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsJson {
    /// Connections accepted.
    pub connections_total: u64,
    /// PUBLISH packets received.
    pub messages_received: u64,
    /// PUBLISH packets sent.
    pub messages_sent: u64,
    /// Bytes read from clients.
    pub bytes_received: u64,
    /// Bytes written to clients.
    pub bytes_sent: u64,
    /// Publishes refused by the ACL.
    pub publish_denied: u64,
    /// Subscriptions refused.
    pub subscribe_denied: u64,
    /// Messages a wildcard subscription matched on a topic the ACL denies its client.
    pub receive_denied: u64,
    /// Connections refused by authentication.
    pub auth_failures: u64,
}

/// Dropped messages by cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drops {
    /// A queue was full (`limits.drop_policy`).
    pub queue_full: u64,
    /// Expired while queued.
    pub expired: u64,
    /// Larger than the client's Maximum Packet Size.
    pub too_large: u64,
    /// The offline queues' memory budget was used up.
    pub memory_budget: u64,
    /// QoS 0 for a client with more than `limits.qos0_pending_write_bytes` waiting to be
    /// written to it.
    pub write_backlog: u64,
}

/// A connected client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Client {
    /// Client identifier.
    pub client_id: String,
    /// User name.
    pub username: Option<String>,
    /// Peer address.
    pub peer: String,
    /// The listener it came in on.
    pub listener: String,
    /// `3.1`, `3.1.1` or `5.0`.
    pub protocol: &'static str,
    /// Keep-alive in seconds.
    pub keep_alive_secs: u64,
    /// Messages sent and not acknowledged yet.
    pub inflight: usize,
    /// Messages waiting for room in the inflight window.
    pub queued: usize,
    /// Seconds since its connection opened.
    pub connected_secs: u64,
}

/// A session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    /// Client identifier.
    pub client_id: String,
    /// Whether its client is connected.
    pub online: bool,
    /// Subscriptions it holds.
    pub subscriptions: usize,
    /// Messages waiting for it (queued and inflight).
    pub queued: usize,
    /// How long it lives once offline, in seconds (0: it ends with its connection).
    pub expiry_secs: u64,
    /// Offline sessions: seconds until it expires.
    pub expires_in_secs: Option<u64>,
}

/// The subscriptions of one topic filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilterSubscriptions {
    /// The topic filter.
    pub filter: String,
    /// Who subscribed with it.
    pub subscribers: Vec<Subscriber>,
}

/// One session's subscription to a filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscriber {
    /// Client identifier.
    pub client_id: String,
    /// Maximum QoS.
    pub qos: u8,
    /// No Local (5.0).
    pub no_local: bool,
    /// Retain As Published (5.0).
    pub retain_as_published: bool,
    /// Retain Handling (5.0): 0, 1 or 2.
    pub retain_handling: u8,
}

/// A retained message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retained {
    /// Topic.
    pub topic: String,
    /// QoS.
    pub qos: u8,
    /// Payload size in bytes.
    pub size: usize,
    /// The first [`PAYLOAD_PREVIEW`] bytes of the payload as UTF-8 (invalid sequences
    /// replaced by U+FFFD).
    pub payload: String,
    /// Whether `payload` is cut short.
    pub truncated: bool,
}

fn protocol(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        _ => "5.0",
    }
}

/// Answers a query from the broker core (on the core's thread: it collects, the JSON is
/// written by [`Console::answer`]). A disconnect sends 5.0 clients DISCONNECT 0x98
/// Administrative action.
pub fn query(broker: &mut Broker, now: Instant, q: Query) -> Answer {
    let secs = |at: Instant| now.saturating_duration_since(at).as_secs();
    match q {
        Query::Overview => overview(
            broker.config().version.clone(),
            secs(broker.started()),
            broker.stats(),
            &broker.gauges(),
            &broker.queue_gauges(),
        ),
        Query::Clients => Answer::Clients(
            broker
                .clients()
                .into_iter()
                .map(|c| Client {
                    client_id: c.client_id.to_string(),
                    username: c.username,
                    peer: c.peer,
                    listener: c.listener,
                    protocol: protocol(c.version),
                    keep_alive_secs: c.keep_alive,
                    inflight: c.inflight,
                    queued: c.queued,
                    connected_secs: secs(c.connected_at),
                })
                .collect(),
        ),
        Query::Sessions => Answer::Sessions(
            broker
                .sessions()
                .into_iter()
                .map(|s| Session {
                    client_id: s.client_id.to_string(),
                    online: s.online,
                    subscriptions: s.subscriptions,
                    queued: s.queued,
                    expiry_secs: s.expiry_secs,
                    expires_in_secs: s
                        .expires_at
                        .map(|at| at.saturating_duration_since(now).as_secs()),
                })
                .collect(),
        ),
        Query::Subscriptions => {
            let mut by_filter: BTreeMap<String, Vec<Subscriber>> = BTreeMap::new();
            for (client_id, s) in broker.subscriptions() {
                by_filter
                    .entry(s.filter.as_str().to_string())
                    .or_default()
                    .push(Subscriber {
                        client_id: client_id.to_string(),
                        qos: s.options.qos as u8,
                        no_local: s.options.no_local,
                        retain_as_published: s.options.retain_as_published,
                        retain_handling: s.options.retain_handling as u8,
                    });
            }
            Answer::Subscriptions(
                by_filter
                    .into_iter()
                    .map(|(filter, subscribers)| FilterSubscriptions {
                        filter,
                        subscribers,
                    })
                    .collect(),
            )
        }
        Query::Retained => Answer::Retained(
            broker
                .retained()
                .into_iter()
                .map(|p| {
                    let cut = p.payload.len().min(PAYLOAD_PREVIEW);
                    Retained {
                        topic: p.topic.as_str().to_string(),
                        qos: p.qos as u8,
                        size: p.payload.len(),
                        payload: String::from_utf8_lossy(&p.payload[..cut]).into_owned(),
                        truncated: cut < p.payload.len(),
                    }
                })
                .collect(),
        ),
        Query::Disconnect(id) => {
            let found = broker.disconnect_client(now, &id, ReasonCode::AdministrativeAction);
            Answer::Disconnected(id, found)
        }
    }
}

fn overview(version: String, uptime_secs: u64, s: &Stats, g: &Gauges, q: &QueueGauges) -> Answer {
    Answer::Overview(Box::new(Overview {
        version,
        uptime_secs,
        listeners: vec![],
        gauges: GaugesJson {
            connections: g.connections,
            sessions: g.sessions,
            subscriptions: g.subscriptions,
            retained: g.retained,
            queued_messages: q.queued_messages,
            queued_bytes: q.queued_bytes,
            inflight_messages: q.inflight_messages,
            offline_queued_bytes: g.offline_queued_bytes,
        },
        stats: StatsJson {
            connections_total: s.connections_total,
            messages_received: s.messages_received,
            messages_sent: s.messages_sent,
            bytes_received: s.bytes_received,
            bytes_sent: s.bytes_sent,
            publish_denied: s.publish_denied,
            subscribe_denied: s.subscribe_denied,
            receive_denied: s.receive_denied,
            auth_failures: s.auth_failures,
        },
        drops: Drops {
            queue_full: s.dropped_queue_full,
            expired: s.dropped_expired,
            too_large: s.dropped_too_large,
            memory_budget: s.dropped_memory_budget,
            write_backlog: s.dropped_write_backlog,
        },
    }))
}

/// The log lines that say where the HTTP listener of `metrics` serves, from every adapter.
pub fn log_listening(addr: std::net::SocketAddr, metrics: &crate::config::Metrics) {
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    if metrics.console {
        tracing::info!(%addr, basic_auth = metrics.basic_auth, "web console on http://{addr}/");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_broker::{BrokerConfig, ConnInfo, Output};
    use mqtt_proto::{
        Connect, Packet, ProtocolVersion, Publish, QoS, Subscribe, Subscription,
        SubscriptionOptions, TopicFilter, TopicName,
    };

    fn request(text: &str) -> Request {
        match parse_request(text.as_bytes()) {
            Parsed::Request(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn get(path: &str) -> Request {
        request(&format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:9100\r\n\r\n"
        ))
    }

    fn console() -> Console {
        Console::new(true, None, vec![])
    }

    fn status(route: Route) -> u16 {
        match route {
            Route::Respond(r) => r.status,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_are_parsed_with_bounds() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x"),
            Parsed::Partial
        );
        let r = request(
            "POST /api/x?y HTTP/1.1\r\nhost: a:1\r\nORIGIN: http://a:1\r\nAuthorization: Basic eA==\r\n\r\n",
        );
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/api/x?y");
        assert_eq!(r.host.as_deref(), Some("a:1"));
        assert_eq!(r.origin.as_deref(), Some("http://a:1"));
        assert_eq!(r.authorization.as_deref(), Some("Basic eA=="));
        let Parsed::Bad(r) = parse_request(b"\x10\x0c\x00\x04MQTT\x04\x02") else {
            panic!("not HTTP")
        };
        assert_eq!(r.status, 400);
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_REQUEST));
        let Parsed::Bad(r) = parse_request(long.as_bytes()) else {
            panic!("too long")
        };
        assert_eq!(r.status, 431);
        let many: String = (0..40).map(|i| format!("X{i}: 1\r\n")).collect();
        let Parsed::Bad(r) = parse_request(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes())
        else {
            panic!("too many headers")
        };
        assert_eq!(r.status, 431);
    }

    #[test]
    fn limits_count_places() {
        let l = Limit::new(2);
        let a = l.try_take().unwrap();
        let _b = l.try_take().unwrap();
        assert!(l.try_take().is_none());
        drop(a);
        assert!(l.try_take().is_some());
    }

    #[test]
    fn requests_are_read_from_a_stream() {
        let mut ok = &b"GET /api/overview HTTP/1.1\r\nHost: a\r\n\r\n"[..];
        assert!(matches!(read_request(&mut ok), Some(Ok(r)) if r.target == "/api/overview"));
        let mut short = &b"GET / HTTP/1.1\r\n"[..];
        assert!(read_request(&mut short).is_none());
        // A head that never ends is cut at MAX_REQUEST, not read to its end.
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(3 * MAX_REQUEST));
        let mut rest = long.as_bytes();
        assert!(matches!(read_request(&mut rest), Some(Err(r)) if r.status == 431));
        assert!(rest.len() > MAX_REQUEST);
    }

    #[test]
    fn routes() {
        let c = console();
        assert_eq!(c.route(&get("/metrics")), Route::Metrics);
        assert_eq!(
            c.route(&get("/api/overview")),
            Route::Query(Query::Overview)
        );
        assert_eq!(
            c.route(&get("/api/clients?x=1")),
            Route::Query(Query::Clients)
        );
        assert_eq!(
            c.route(&get("/api/sessions")),
            Route::Query(Query::Sessions)
        );
        assert_eq!(
            c.route(&get("/api/subscriptions")),
            Route::Query(Query::Subscriptions)
        );
        assert_eq!(
            c.route(&get("/api/retained")),
            Route::Query(Query::Retained)
        );
        for (path, kind) in [
            ("/", "text/html"),
            ("/console.js", "text/javascript"),
            ("/console.css", "text/css"),
        ] {
            let Route::Respond(r) = c.route(&get(path)) else {
                panic!("{path}")
            };
            assert_eq!(r.status, 200);
            assert!(r.content_type.starts_with(kind), "{path}");
        }
        assert_eq!(status(c.route(&get("/nothing"))), 404);
        assert_eq!(status(c.route(&get("/api/clients/a/disconnect"))), 405);
        let post = |path: &str| request(&format!("POST {path} HTTP/1.1\r\nHost: [::1]:9\r\n\r\n"));
        assert_eq!(status(c.route(&post("/api/clients"))), 405);
        assert_eq!(
            c.route(&post("/api/clients/room%2F1%20%C3%A9/disconnect")),
            Route::Query(Query::Disconnect("room/1 é".into()))
        );
        assert_eq!(status(c.route(&post("/api/clients/%zz/disconnect"))), 400);
        assert_eq!(status(c.route(&post("/api/clients/%FF/disconnect"))), 400);
        // Off: only the metrics.
        let off = Console::new(false, None, vec![]);
        assert_eq!(off.route(&get("/metrics")), Route::Metrics);
        assert_eq!(status(off.route(&get("/"))), 404);
        assert_eq!(status(off.route(&get("/api/overview"))), 404);
    }

    #[test]
    fn without_credentials_only_local_names_and_same_origin() {
        let c = console();
        let with_host = |host: &str| {
            request(&format!(
                "GET /api/clients HTTP/1.1\r\nHost: {host}\r\n\r\n"
            ))
        };
        for host in ["127.0.0.1:9100", "localhost:9100", "[::1]:9100", "10.1.2.3"] {
            assert_eq!(
                c.route(&with_host(host)),
                Route::Query(Query::Clients),
                "{host}"
            );
        }
        for host in ["evil.example:9100", "[::1", "localhost.evil:1"] {
            assert_eq!(status(c.route(&with_host(host))), 403, "{host}");
        }
        assert_eq!(
            status(c.route(&request("GET / HTTP/1.1\r\n\r\n"))),
            403,
            "no Host"
        );
        // Opened to the network on purpose: any name.
        let config = crate::config::Config::parse(
            "[metrics]\nbind = \"0.0.0.0:9100\"\nconsole = true\nallow_public_console = true",
        )
        .unwrap();
        let public = Console::from_config(&config, None, &[]);
        assert_eq!(
            public.route(&with_host("broker.lan:9100")),
            Route::Query(Query::Clients)
        );
        // A POST from another site's page.
        let post = |origin: &str| {
            request(&format!(
                "POST /api/clients/a/disconnect HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nOrigin: {origin}\r\n\r\n"
            ))
        };
        assert_eq!(status(c.route(&post("http://evil.example"))), 403);
        assert_eq!(status(c.route(&post("null"))), 403);
        assert_eq!(
            c.route(&post("http://127.0.0.1:9100")),
            Route::Query(Query::Disconnect("a".into()))
        );
    }

    #[test]
    fn basic_auth_against_the_password_file() {
        let mut p = Passwords::default();
        p.set("admin", "s3cret:x").unwrap();
        let c = Console::new(true, Some(Arc::new(p)), vec![]);
        assert!(c.needs_auth());
        let now = Instant::now();
        let header = |user_pass: &str| {
            format!(
                "Basic {}",
                data_encoding::BASE64.encode(user_pass.as_bytes())
            )
        };
        assert!(!c.authorized(None, now));
        assert!(!c.authorized(Some(&header("admin:wrong")), now));
        assert!(!c.authorized(Some(&header("nobody:s3cret:x")), now));
        assert!(!c.authorized(Some("Bearer abc"), now));
        assert!(!c.authorized(Some("Basic !!!"), now));
        let good = header("admin:s3cret:x");
        assert!(c.authorized(Some(&good), now));
        // Remembered for a while, then checked again.
        assert!(c.authorized(Some(&good), now + Duration::from_secs(10)));
        assert!(c.authorized(Some(&good), now + AUTH_CACHE_TTL * 2));
        // With credentials any Host is served.
        let r = request("GET /api/overview HTTP/1.1\r\nHost: broker.example:9100\r\n\r\n");
        assert_eq!(c.route(&r), Route::Query(Query::Overview));
        let u = unauthorized();
        assert_eq!(u.status, 401);
        let text = String::from_utf8(u.to_bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
        assert!(
            text.contains("\r\nWWW-Authenticate: Basic realm="),
            "{text}"
        );
    }

    /// A broker with one 5.0 client `c1` subscribed to `a/+` and one retained message.
    fn broker() -> (Broker, Instant) {
        let t0 = Instant::now();
        let mut b = Broker::new(BrokerConfig::default(), t0);
        b.handle_connection(
            t0,
            1,
            ConnInfo {
                peer: "127.0.0.1:5000".into(),
                listener: "local".into(),
                ..Default::default()
            },
        );
        let mut bytes = bytes::BytesMut::new();
        let mut connect = Connect::new(ProtocolVersion::V5, "c1".try_into().unwrap());
        connect.keep_alive = 30;
        Packet::Connect(Box::new(connect))
            .encode(&mut bytes, ProtocolVersion::V5, u32::MAX)
            .unwrap();
        let options = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        };
        Packet::Subscribe(Subscribe {
            packet_id: std::num::NonZeroU16::MIN,
            properties: Default::default(),
            subscriptions: vec![Subscription {
                filter: TopicFilter::new("a/+").unwrap(),
                options,
            }],
        })
        .encode(&mut bytes, ProtocolVersion::V5, u32::MAX)
        .unwrap();
        b.handle_input(t0, 1, &bytes);
        let mut retained = Publish::new(TopicName::new("a/r").unwrap(), vec![b'x'; 300]);
        retained.retain = true;
        b.publish(t0, retained);
        while b.poll_output().is_some() {}
        (b, t0)
    }

    #[test]
    fn queries_answer_as_json() {
        let (mut b, t0) = broker();
        let now = t0 + Duration::from_secs(7);
        let c = Console::new(
            true,
            None,
            vec![ListenerInfo {
                name: "local".into(),
                addr: "127.0.0.1:1883".into(),
                protocol: "tcp".into(),
            }],
        );
        let mut json = |q| {
            let r = c.answer(query(&mut b, now, q));
            assert_eq!(r.status, 200);
            assert_eq!(r.content_type, "application/json");
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()
        };
        let o = json(Query::Overview);
        assert_eq!(o["uptime_secs"], 7);
        assert!(o["version"].as_str().unwrap().starts_with("mqtt-broker"));
        assert_eq!(o["listeners"][0]["addr"], "127.0.0.1:1883");
        assert_eq!(o["gauges"]["connections"], 1);
        assert_eq!(o["gauges"]["subscriptions"], 1);
        assert_eq!(o["gauges"]["retained"], 1);
        assert_eq!(o["drops"]["queue_full"], 0);
        assert!(o["stats"]["bytes_received"].as_u64().unwrap() > 0);
        let clients = json(Query::Clients);
        assert_eq!(clients[0]["client_id"], "c1");
        assert_eq!(clients[0]["peer"], "127.0.0.1:5000");
        assert_eq!(clients[0]["listener"], "local");
        assert_eq!(clients[0]["protocol"], "5.0");
        assert_eq!(clients[0]["keep_alive_secs"], 30);
        assert_eq!(clients[0]["connected_secs"], 7);
        let sessions = json(Query::Sessions);
        assert_eq!(sessions[0]["client_id"], "c1");
        assert_eq!(sessions[0]["online"], true);
        assert_eq!(sessions[0]["subscriptions"], 1);
        assert_eq!(sessions[0]["expires_in_secs"], serde_json::Value::Null);
        let subs = json(Query::Subscriptions);
        assert_eq!(subs[0]["filter"], "a/+");
        assert_eq!(subs[0]["subscribers"][0]["client_id"], "c1");
        assert_eq!(subs[0]["subscribers"][0]["qos"], 1);
        let retained = json(Query::Retained);
        assert_eq!(retained[0]["topic"], "a/r");
        assert_eq!(retained[0]["size"], 300);
        assert_eq!(retained[0]["truncated"], true);
        assert_eq!(
            retained[0]["payload"].as_str().unwrap().len(),
            PAYLOAD_PREVIEW
        );
    }

    #[test]
    fn disconnect_answers_404_for_unknown_clients() {
        let (mut b, t0) = broker();
        let c = console();
        let r = c.answer(query(&mut b, t0, Query::Disconnect("nobody".into())));
        assert_eq!(r.status, 404);
        assert!(String::from_utf8_lossy(&r.body).contains("nobody"));
        let r = c.answer(query(&mut b, t0, Query::Disconnect("c1".into())));
        assert_eq!(r.status, 200);
        // The client gets DISCONNECT 0x98 Administrative action, and the connection closes.
        let mut disconnect = None;
        let mut closed = false;
        while let Some(o) = b.poll_output() {
            match o {
                Output::Transmit(1, bytes) => disconnect = Some(bytes),
                Output::Close(1) => closed = true,
                _ => {}
            }
        }
        let bytes = disconnect.expect("DISCONNECT sent");
        assert_eq!(bytes[0], 0xE0);
        assert_eq!(bytes[2], 0x98);
        assert!(closed);
    }
}
