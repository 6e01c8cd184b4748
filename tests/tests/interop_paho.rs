//! Interop with paho-mqtt 2.x (Python, PyPI package `paho-mqtt`, installed by `.ci/run`)
//! against every broker (tokio, std threads, smol, async-std; see `mqtt_tests::brokers`)
//! on an ephemeral loopback port, MQTT 3.1.1 and 5.0: publish and
//! subscribe at each QoS, retained messages, wills, persistent sessions with their offline
//! queue, user name and password, and subscriptions denied by the ACL.
//!
//! `tests/interop/paho_client.py SCENARIO HOST PORT VERSION [ARGS]` runs one scenario with
//! paho and prints what it observed as JSON lines; the assertions are here. Every test
//! starts its own broker with the configuration it needs.

use mqtt_tests::brokers::{Broker, Runtime};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A scenario run is killed after this long (the script gives up on its own after 60 s).
const SCRIPT_LIMIT: Duration = Duration::from_secs(90);

const V311: &str = "3.1.1";
const V5: &str = "5.0";

// ---------------------------------------------------------------------------------------
// Running the broker and the script

async fn broker(rt: Runtime, extra: &str) -> (Broker, u16) {
    let text = format!("[[listener]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n{extra}");
    let running = Broker::start(rt, &text).await;
    let port = running.port();
    (running, port)
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .join("tests/interop/paho_client.py")
}

/// Fails (never skips) when paho-mqtt is missing.
fn require_paho() {
    let out = Command::new("python3")
        .args(["-c", "import paho.mqtt"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "paho-mqtt is not installed for python3: run `pip install paho-mqtt` \
             (.ci/run does it)\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            panic!("python3 cannot be run ({e}): install Python 3, then `pip install paho-mqtt`")
        }
    }
}

/// Runs one scenario against the broker on `port`; panics unless the script ran to its end.
async fn paho(scenario: &str, port: u16, version: &str, args: &[&str]) -> Observed {
    paho_over("tcp", scenario, port, version, args).await
}

/// The same over another transport (`websockets`).
async fn paho_over(
    transport: &str,
    scenario: &str,
    port: u16,
    version: &str,
    args: &[&str],
) -> Observed {
    require_paho();
    let mut cmd = Command::new("python3");
    cmd.env("PAHO_TRANSPORT", transport);
    cmd.arg("-u")
        .arg(script())
        .args([scenario, "127.0.0.1", &port.to_string(), version])
        .args(args);
    let what = [scenario, version]
        .iter()
        .chain(args)
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    tokio::task::spawn_blocking(move || run_bounded(cmd, &what, SCRIPT_LIMIT))
        .await
        .unwrap()
}

fn run_bounded(mut cmd: Command, what: &str, limit: Duration) -> Observed {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Read both pipes while waiting, so that a large output cannot block the script.
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let (status, killed) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status, false);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break (child.wait().unwrap(), true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    let lines: Vec<String> = stdout.lines().map(str::to_string).collect();
    let transcript = transcript(what, &lines, &stderr);
    assert!(!killed, "paho {what}: killed after {limit:?}\n{transcript}");
    let events = lines
        .iter()
        .map(|l| match parse_json(l) {
            Ok(Json::Obj(m)) => Event(m),
            other => panic!("paho {what}: not a JSON object: {other:?}\n{transcript}"),
        })
        .collect::<Vec<_>>();
    assert!(
        status.success() && events.last().map(Event::ev) == Some("done"),
        "paho {what}: {status}\n{transcript}"
    );
    Observed { events, transcript }
}

// ---------------------------------------------------------------------------------------
// What the script observed

struct Event(BTreeMap<String, Json>);

impl Event {
    fn get(&self, key: &str) -> &Json {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("no {key:?} in {:?}", self.0))
    }
    fn str(&self, key: &str) -> &str {
        match self.get(key) {
            Json::Str(s) => s,
            v => panic!("{key:?} is not a string: {v:?}"),
        }
    }
    fn int(&self, key: &str) -> i64 {
        match self.get(key) {
            Json::Int(n) => *n,
            v => panic!("{key:?} is not an integer: {v:?}"),
        }
    }
    fn opt_int(&self, key: &str) -> Option<i64> {
        match self.get(key) {
            Json::Null => None,
            _ => Some(self.int(key)),
        }
    }
    fn bool(&self, key: &str) -> bool {
        match self.get(key) {
            Json::Bool(b) => *b,
            v => panic!("{key:?} is not a boolean: {v:?}"),
        }
    }
    fn ev(&self) -> &str {
        self.str("ev")
    }
    fn is(&self, ev: &str, client: &str) -> bool {
        self.ev() == ev && self.0.get("client") == Some(&Json::Str(client.to_string()))
    }
}

struct Observed {
    events: Vec<Event>,
    transcript: String,
}

/// A message as a subscriber received it.
#[derive(PartialEq)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
    qos: i64,
    retain: bool,
}

fn msg(topic: &str, payload: &[u8], qos: i64, retain: bool) -> Msg {
    Msg {
        topic: topic.to_string(),
        payload: payload.to_vec(),
        qos,
        retain,
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Long payloads by length, head and a checksum, to keep failures readable.
        let p = &self.payload;
        if p.len() <= 32 {
            write!(f, "{} {:?}", self.topic, String::from_utf8_lossy(p))?;
        } else {
            let sum = p.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
            });
            write!(
                f,
                "{} [{} bytes {:02x?}.. fnv {sum:016x}]",
                self.topic,
                p.len(),
                &p[..8]
            )?;
        }
        write!(f, " qos={} retain={}", self.qos, u8::from(self.retain))
    }
}

impl Observed {
    /// (rc, session present) of each CONNACK `client` received.
    fn connacks(&self, client: &str) -> Vec<(i64, bool)> {
        self.events
            .iter()
            .filter(|e| e.is("connack", client))
            .map(|e| (e.int("rc"), e.bool("session_present")))
            .collect()
    }
    /// The codes of each SUBACK `client` received.
    fn subacks(&self, client: &str) -> Vec<Vec<i64>> {
        self.events
            .iter()
            .filter(|e| e.is("suback", client))
            .map(|e| match e.get("codes") {
                Json::Arr(a) => a
                    .iter()
                    .map(|c| match c {
                        Json::Int(n) => *n,
                        v => panic!("not a code: {v:?}"),
                    })
                    .collect(),
                v => panic!("codes: {v:?}"),
            })
            .collect()
    }
    /// (topic, QoS, 5.0 reason code) of each publish of `client` that completed.
    fn published(&self, client: &str) -> Vec<(String, i64, Option<i64>)> {
        self.events
            .iter()
            .filter(|e| e.is("published", client))
            .map(|e| (e.str("topic").to_string(), e.int("qos"), e.opt_int("rc")))
            .collect()
    }
    /// The messages `client` received, in order.
    fn messages(&self, client: &str) -> Vec<Msg> {
        self.events
            .iter()
            .filter(|e| e.is("message", client))
            .map(|e| Msg {
                topic: e.str("topic").to_string(),
                payload: unhex(e.str("payload")),
                qos: e.int("qos"),
                retain: e.bool("retain"),
            })
            .collect()
    }
    /// Everything the script printed, for failure messages.
    fn transcript(&self) -> &str {
        &self.transcript
    }
}

/// What a script run printed, long lines cut.
fn transcript(what: &str, lines: &[String], stderr: &str) -> String {
    let mut t = format!("--- paho {what}, standard output:\n");
    for line in lines {
        match line.char_indices().nth(240) {
            Some((cut, _)) => {
                t.push_str(&line[..cut]);
                t.push_str("...\n");
            }
            None => {
                t.push_str(line);
                t.push('\n');
            }
        }
    }
    t.push_str("--- standard error:\n");
    t.push_str(stderr);
    t
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex payload"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// A JSON reader for the script's lines (objects, arrays, strings, integers, booleans, null)

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

fn parse_json(text: &str) -> Result<Json, String> {
    let mut p = JsonParser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing text at {}", p.i));
    }
    Ok(v)
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && b" \t\r\n".contains(&self.s[self.i]) {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", c as char, self.i))
        }
    }
    fn literal(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(format!("bad literal at {}", self.i))
        }
    }
    fn value(&mut self) -> Result<Json, String> {
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                let mut m = BTreeMap::new();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(m));
                }
                loop {
                    let k = self.string()?;
                    self.expect(b':')?;
                    m.insert(k, self.value()?);
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(m));
                        }
                        _ => return Err(format!("expected , or }} at {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut a = Vec::new();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json::Arr(a));
                }
                loop {
                    a.push(self.value()?);
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(a));
                        }
                        _ => return Err(format!("expected , or ] at {}", self.i)),
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                self.i += 1;
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                t.parse()
                    .map(Json::Int)
                    .map_err(|e| format!("number {t:?}: {e}"))
            }
            _ => Err(format!("unexpected input at {}", self.i)),
        }
    }
    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("bad \\u escape at {}", self.i))?;
        self.i += 4;
        Ok(h)
    }
    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i] != b'"' && self.s[self.i] != b'\\' {
                self.i += 1;
            }
            out.push_str(std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?);
            match self.s.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let c = *self.s.get(self.i + 1).ok_or("unterminated escape")?;
                    self.i += 2;
                    match c {
                        b'"' | b'\\' | b'/' => out.push(c as char),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xd800..0xdc00).contains(&cp)
                                && self.s[self.i..].starts_with(b"\\u")
                            {
                                self.i += 2;
                                let lo = self.hex4()?;
                                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo.wrapping_sub(0xdc00));
                            }
                            out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                        }
                        _ => return Err(format!("bad escape at {}", self.i)),
                    }
                }
                _ => return Err("unterminated string".into()),
            }
        }
    }
}

#[test]
fn json_reader() {
    let v = parse_json(r#"{"a": [1, -2, true, null], "b": "x\"\u00e9\ud83d\ude00", "c": {}}"#);
    let mut m = BTreeMap::new();
    m.insert(
        "a".to_string(),
        Json::Arr(vec![
            Json::Int(1),
            Json::Int(-2),
            Json::Bool(true),
            Json::Null,
        ]),
    );
    m.insert("b".to_string(), Json::Str("x\"é😀".to_string()));
    m.insert("c".to_string(), Json::Obj(BTreeMap::new()));
    assert_eq!(v, Ok(Json::Obj(m)));
    assert!(parse_json("{\"a\": 1} x").is_err());
    assert!(parse_json("{\"a\": 1.5}").is_err());
}

// ---------------------------------------------------------------------------------------
// Scenarios

fn reason(version: &str, code: i64) -> Option<i64> {
    (version == V5).then_some(code)
}

async fn pub_sub(rt: Runtime, version: &str) {
    pub_sub_over(rt, "tcp", version).await;
}

async fn pub_sub_over(rt: Runtime, transport: &str, version: &str) {
    let (running, port) = broker_for(rt, transport).await;
    let topic = format!("paho/pubsub/{version}");
    let big: Vec<u8> = (0..70000u32).map(|i| (i % 251) as u8).collect();
    let all: Vec<u8> = (0..=255u8).collect();
    for sub_qos in [2, 1, 0] {
        let o = paho_over(transport, "pubsub", port, version, &[&sub_qos.to_string()]).await;
        let t = o.transcript();
        assert_eq!(o.connacks("sub"), [(0, false)], "{t}");
        assert_eq!(o.subacks("sub"), [vec![sub_qos]], "{t}");
        // Every publish completed (QoS 1: PUBACK, QoS 2: PUBREC..PUBCOMP); 5.0 reason 0.
        let expect_done: Vec<_> = [0, 1, 2, 1]
            .iter()
            .map(|&q| {
                (
                    topic.clone(),
                    q,
                    if q == 0 { None } else { reason(version, 0) },
                )
            })
            .collect();
        assert_eq!(o.published("pub"), expect_done, "{t}");
        // Content, topic and QoS as published, the QoS capped at the one granted
        // (3.1.1 [MQTT-3.8.4-6], 5.0 [MQTT-3.8.4-8]); RETAIN 0.
        assert_eq!(
            o.messages("sub"),
            [
                msg(&topic, b"m0", 0, false),
                msg(&topic, b"m1", sub_qos.min(1), false),
                msg(&topic, &all, sub_qos.min(2), false),
                msg(&topic, &big, sub_qos.min(1), false),
            ],
            "sub QoS {sub_qos}\n{t}"
        );
    }
    running.shutdown().await;
}

async fn retained(rt: Runtime, version: &str) {
    retained_over(rt, "tcp", version).await;
}

async fn retained_over(rt: Runtime, transport: &str, version: &str) {
    let (running, port) = broker_for(rt, transport).await;
    let o = paho_over(transport, "retained", port, version, &[]).await;
    let t = o.transcript();
    assert_eq!(o.subacks("sub"), [vec![1]], "{t}");
    let expected = [
        // Sent on subscribe with RETAIN 1 (3.1.1 [MQTT-3.3.1-6], 3.1.1 [MQTT-3.3.1-8];
        // 5.0 [MQTT-3.3.1-9]: Retain Handling 0 sends the retained messages).
        msg("paho/ret/a", b"kept", 1, true),
        // A retained publish forwarded to the existing subscription has RETAIN 0
        // (3.1.1 [MQTT-3.3.1-9]; 5.0 [MQTT-3.3.1-12], paho subscribes with Retain As
        // Published 0).
        msg("paho/ret/b", b"live", 1, false),
    ];
    assert_eq!(o.messages("sub"), expected, "{t}");
    running.shutdown().await;
}

async fn will(rt: Runtime, version: &str) {
    let (running, port) = broker(rt, "").await;
    let o = paho("will", port, version, &[]).await;
    let t = o.transcript();
    assert_eq!(o.subacks("watch"), [vec![1]], "{t}");
    let mut got = o.messages("watch");
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    // Published when the network connection closes without DISCONNECT, whether the
    // socket was shut down (FIN) or reset (RST) (3.1.1 [MQTT-3.1.2-8], 5.0 [MQTT-3.1.2-8]);
    // discarded on a normal DISCONNECT (3.1.1 [MQTT-3.14.4-3], 5.0 [MQTT-3.14.4-3]), so
    // nothing on paho/will/normal.
    let mut expected = vec![
        msg("paho/will/fin", b"fin", 1, false),
        msg("paho/will/rst", b"rst", 1, false),
    ];
    if version == V5 {
        // DISCONNECT with reason code 0x04 (Disconnect with Will Message) publishes it.
        expected.insert(1, msg("paho/will/rc4", b"rc4", 1, false));
    }
    assert_eq!(got, expected, "{t}");
    running.shutdown().await;
}

async fn persistent_session(rt: Runtime, version: &str) {
    let (running, port) = broker(rt, "").await;
    let o = paho("session", port, version, &[]).await;
    let t = o.transcript();
    let topic = format!("paho/session/{version}");
    // First connection: no session yet, Session Present 0 (3.1.1 [MQTT-3.2.2-3],
    // 5.0 [MQTT-3.2.2-3]). Reconnection: the stored session, Session Present 1
    // (3.1.1 [MQTT-3.2.2-2], 5.0 [MQTT-3.2.2-3]).
    assert_eq!(o.connacks("sub"), [(0, false), (0, true)], "{t}");
    assert_eq!(o.subacks("sub"), [vec![1]], "{t}");
    // The QoS 1 and 2 messages published while the session was offline were kept
    // (3.1.1 [MQTT-3.1.2-5]; 5.0 [MQTT-3.1.2-23], Session Expiry Interval 300) and are
    // delivered on resumption (3.1.1 [MQTT-3.1.2-4], 5.0 [MQTT-3.1.2-5]) at the granted
    // QoS 1, in order.
    assert_eq!(
        o.messages("sub"),
        [
            msg(&topic, b"q1", 1, false),
            msg(&topic, b"q2", 1, false),
            msg(&topic, b"q3", 1, false),
        ],
        "{t}"
    );
    running.shutdown().await;
}

/// A scratch directory of its own for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mqtt-paho-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn auth(rt: Runtime, version: &str) {
    let dir = scratch(&format!("auth-{version}-{rt:?}"));
    let mut pw = adapter_tokio::auth::Passwords::default();
    pw.set("ann", "s3cret").unwrap();
    std::fs::write(dir.join("passwd"), pw.to_text()).unwrap();
    let extra = format!(
        "[auth]\npassword_file = \"{}\"\n",
        dir.join("passwd").display()
    );
    let (running, port) = broker(rt, &extra).await;
    let refused = if version == V5 {
        0x86 // Bad User Name or Password
    } else {
        4 // Connection Refused, bad user name or password
    };
    for (user, password, expected) in [
        ("ann", "s3cret", 0),
        ("ann", "wrong", refused),
        ("bob", "s3cret", refused),
    ] {
        let o = paho("auth", port, version, &[user, password]).await;
        // A refusal has Session Present 0 (3.1.1 [MQTT-3.2.2-4], 5.0 [MQTT-3.2.2-6]).
        assert_eq!(
            o.connacks("auth"),
            [(expected, false)],
            "{user}/{password}\n{}",
            o.transcript()
        );
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

async fn acl(rt: Runtime, version: &str) {
    let dir = scratch(&format!("acl-{version}-{rt:?}"));
    std::fs::write(dir.join("acl"), "deny both any paho/secret/#\n").unwrap();
    let extra = format!("[auth]\nacl_file = \"{}\"\n", dir.join("acl").display());
    let (running, port) = broker(rt, &extra).await;
    let o = paho("acl", port, version, &[]).await;
    let t = o.transcript();
    // SUBSCRIBE [paho/secret/x, paho/open/x], then [paho/secret/#]: the denied filters get
    // 0x80, one code per filter in order (3.1.1 [MQTT-3.9.3-1], 5.0 [MQTT-3.9.3-1]).
    assert_eq!(o.subacks("sub"), [vec![0x80, 1], vec![0x80]], "{t}");
    // The denied publish is dropped; 5.0 acknowledges it with 0x87 Not Authorized.
    assert_eq!(
        o.published("pub"),
        [
            ("paho/secret/x".to_string(), 1, reason(version, 0x87)),
            ("paho/open/x".to_string(), 1, reason(version, 0)),
        ],
        "{t}"
    );
    assert_eq!(
        o.messages("sub"),
        [msg("paho/open/x", b"visible", 1, false)],
        "{t}"
    );
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------
// The scenario x version matrix

async fn pub_sub_v311(rt: Runtime) {
    pub_sub(rt, V311).await;
}

async fn pub_sub_v5(rt: Runtime) {
    pub_sub(rt, V5).await;
}

async fn retained_v311(rt: Runtime) {
    retained(rt, V311).await;
}

async fn retained_v5(rt: Runtime) {
    retained(rt, V5).await;
}

async fn will_v311(rt: Runtime) {
    will(rt, V311).await;
}

async fn will_v5(rt: Runtime) {
    will(rt, V5).await;
}

async fn persistent_session_v311(rt: Runtime) {
    persistent_session(rt, V311).await;
}

async fn persistent_session_v5(rt: Runtime) {
    persistent_session(rt, V5).await;
}

async fn auth_v311(rt: Runtime) {
    auth(rt, V311).await;
}

async fn auth_v5(rt: Runtime) {
    auth(rt, V5).await;
}

async fn acl_subscribe_denied_v311(rt: Runtime) {
    acl(rt, V311).await;
}

async fn acl_subscribe_denied_v5(rt: Runtime) {
    acl(rt, V5).await;
}

/// A broker with one listener of the transport paho will use (`tcp`, or `websockets`
/// on `/mqtt`).
async fn broker_for(rt: Runtime, transport: &str) -> (Broker, u16) {
    if transport == "tcp" {
        return broker(rt, "").await;
    }
    let text =
        "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\n[sys]\ninterval_secs = 0\n";
    let running = Broker::start(rt, text).await;
    let port = running.port();
    (running, port)
}

async fn websocket_pub_sub_v311(rt: Runtime) {
    pub_sub_over(rt, "websockets", "3.1.1").await;
}

async fn websocket_pub_sub_v5(rt: Runtime) {
    pub_sub_over(rt, "websockets", "5.0").await;
}

async fn websocket_retained_v311(rt: Runtime) {
    retained_over(rt, "websockets", "3.1.1").await;
}

async fn websocket_retained_v5(rt: Runtime) {
    retained_over(rt, "websockets", "5.0").await;
}

mqtt_tests::for_each_broker!(
    pub_sub_v311,
    pub_sub_v5,
    retained_v311,
    retained_v5,
    will_v311,
    will_v5,
    persistent_session_v311,
    persistent_session_v5,
    auth_v311,
    auth_v5,
    acl_subscribe_denied_v311,
    acl_subscribe_denied_v5,
    websocket_pub_sub_v311,
    websocket_pub_sub_v5,
    websocket_retained_v311,
    websocket_retained_v5,
);
