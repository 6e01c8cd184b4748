//! The disk store means what `MemoryStore` means: random, consistent record streams
//! written in random batches, then read back after a reopen, give the same snapshot.
//! Damage is detected, not papered over.

use mqtt_broker::{MemoryStore, Record, Snapshot};
use mqtt_proto::*;
use mqtt_store::{Store, StoreError};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

/// A fresh directory under the target directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("mqtt-store-test-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const CLIENTS: [&str; 3] = ["a", "b", "c/1"];
const FILTERS: [&str; 3] = ["t/#", "t/+", "$share/g/t"];
const TOPICS: [&str; 2] = ["t/x", "t/y"];

#[derive(Debug, Clone)]
enum Op {
    Session(usize, u16),
    End(usize),
    Subscribe(usize, usize, u8, u8),
    Unsubscribe(usize, usize),
    Retain(usize, Option<u8>),
    /// A message to some clients: (client, qos 1/2, with a packet id).
    Message(u8, Vec<(usize, u8, bool, bool)>),
    PacketId(usize, usize),
    Received(usize, usize),
    Delivered(usize, usize),
    Incoming(usize, u16),
    IncomingReleased(usize, u16),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS.len();
    prop_oneof![
        2 => (c.clone(), 0u16..5).prop_map(|(c, e)| Op::Session(c, e)),
        1 => c.clone().prop_map(Op::End),
        2 => (c.clone(), 0..FILTERS.len(), 0u8..3, 0u8..3)
            .prop_map(|(c, f, q, i)| Op::Subscribe(c, f, q, i)),
        1 => (c.clone(), 0..FILTERS.len()).prop_map(|(c, f)| Op::Unsubscribe(c, f)),
        1 => (0..TOPICS.len(), proptest::option::of(any::<u8>()))
            .prop_map(|(t, p)| Op::Retain(t, p)),
        4 => (any::<u8>(), proptest::collection::vec(
                (c.clone(), 1u8..3, any::<bool>(), any::<bool>()), 1..3))
            .prop_map(|(p, to)| Op::Message(p, to)),
        2 => (c.clone(), 0usize..4).prop_map(|(c, k)| Op::PacketId(c, k)),
        1 => (c.clone(), 0usize..4).prop_map(|(c, k)| Op::Received(c, k)),
        3 => (c.clone(), 0usize..4).prop_map(|(c, k)| Op::Delivered(c, k)),
        1 => (c.clone(), 1u16..4).prop_map(|(c, p)| Op::Incoming(c, p)),
        1 => (c.clone(), 1u16..4).prop_map(|(c, p)| Op::IncomingReleased(c, p)),
    ]
}

fn s(v: &str) -> MqttString {
    MqttString::new(v).unwrap()
}

/// Turns operations into records a broker could emit: only for sessions that exist,
/// copies addressed as the broker addresses them.
fn records(ops: &[Op]) -> Vec<Record> {
    // client -> copies (seq, packet id, received)
    let mut sessions: BTreeMap<usize, Vec<(u64, Option<PacketId>, bool)>> = BTreeMap::new();
    let mut next_seq = 0u64;
    let mut next_pid = 1u16;
    let mut pid = || {
        next_pid = next_pid % 60_000 + 1;
        PacketId::new(next_pid).unwrap()
    };
    let mut out = vec![];
    for op in ops {
        match op.clone() {
            Op::Session(c, e) => {
                sessions.entry(c).or_default();
                out.push(Record::Session {
                    client_id: s(CLIENTS[c]),
                    expiry: Duration::from_secs(u64::from(e) * 100 + 1),
                });
            }
            Op::End(c) if sessions.remove(&c).is_some() => {
                out.push(Record::SessionEnded {
                    client_id: s(CLIENTS[c]),
                });
            }
            Op::Subscribe(c, f, q, i) if sessions.contains_key(&c) => {
                out.push(Record::Subscribed {
                    client_id: s(CLIENTS[c]),
                    subscription: Subscription {
                        filter: TopicFilter::new(FILTERS[f]).unwrap(),
                        options: SubscriptionOptions {
                            qos: QoS::from_u8(q).unwrap(),
                            no_local: q == 1,
                            retain_as_published: i == 2,
                            retain_handling: RetainHandling::from_u8(i).unwrap(),
                        },
                    },
                    identifier: NonZeroU32::new(u32::from(i)),
                });
            }
            Op::Unsubscribe(c, f) if sessions.contains_key(&c) => {
                out.push(Record::Unsubscribed {
                    client_id: s(CLIENTS[c]),
                    filter: TopicFilter::new(FILTERS[f]).unwrap(),
                });
            }
            Op::Retain(t, p) => out.push(Record::Retained {
                topic: TOPICS[t].into(),
                publish: p.map(|p| {
                    let mut m = Publish::new(TopicName::new(TOPICS[t]).unwrap(), vec![p; 3]);
                    m.retain = true;
                    m.qos = QoS::from_u8(p % 3).unwrap();
                    Box::new(m)
                }),
            }),
            Op::Message(payload, to) => {
                let to: Vec<_> = to
                    .into_iter()
                    .filter(|(c, ..)| sessions.contains_key(c))
                    .collect();
                if to.is_empty() {
                    continue;
                }
                let seq = next_seq;
                next_seq += 1;
                let mut m = Publish::new(TopicName::new("t/x").unwrap(), vec![payload; 5]);
                m.qos = QoS::ExactlyOnce;
                m.properties.message_expiry_interval = (payload % 2 == 0).then_some(3600);
                m.properties.user_properties = vec![(s("k"), s("v"))];
                out.push(Record::Message {
                    seq,
                    publish: Box::new(m),
                });
                for (c, q, retain, with_id) in to {
                    let id = with_id.then(&mut pid);
                    sessions.get_mut(&c).unwrap().push((seq, id, false));
                    out.push(Record::Queued {
                        client_id: s(CLIENTS[c]),
                        seq,
                        qos: QoS::from_u8(q).unwrap(),
                        retain,
                        subscription_identifiers: if retain {
                            vec![NonZeroU32::new(7).unwrap()]
                        } else {
                            vec![]
                        },
                        packet_id: id,
                    });
                }
            }
            Op::PacketId(c, k) => {
                let Some(copies) = sessions.get_mut(&c) else {
                    continue;
                };
                if let Some(e) = copies.iter_mut().filter(|e| e.1.is_none()).nth(k) {
                    let id = pid();
                    // The oldest copy of that message without an id gets it.
                    let seq = e.0;
                    let first = copies
                        .iter_mut()
                        .find(|x| x.0 == seq && x.1.is_none())
                        .unwrap();
                    first.1 = Some(id);
                    out.push(Record::PacketId {
                        client_id: s(CLIENTS[c]),
                        seq,
                        packet_id: id,
                    });
                }
            }
            Op::Received(c, k) => {
                let Some(copies) = sessions.get_mut(&c) else {
                    continue;
                };
                if let Some(e) = copies.iter_mut().filter(|e| e.1.is_some() && !e.2).nth(k) {
                    e.2 = true;
                    out.push(Record::Received {
                        client_id: s(CLIENTS[c]),
                        seq: e.0,
                        packet_id: e.1.unwrap(),
                    });
                }
            }
            Op::Delivered(c, k) => {
                let Some(copies) = sessions.get_mut(&c) else {
                    continue;
                };
                if k < copies.len() {
                    let (seq, id, _) = copies[k];
                    // The broker names the oldest copy with that id.
                    let at = copies.iter().position(|x| x.0 == seq && x.1 == id).unwrap();
                    copies.remove(at);
                    out.push(Record::Delivered {
                        client_id: s(CLIENTS[c]),
                        seq,
                        packet_id: id,
                    });
                }
            }
            Op::Incoming(c, p) if sessions.contains_key(&c) => out.push(Record::IncomingQos2 {
                client_id: s(CLIENTS[c]),
                packet_id: PacketId::new(p).unwrap(),
            }),
            Op::IncomingReleased(c, p) if sessions.contains_key(&c) => {
                out.push(Record::IncomingReleased {
                    client_id: s(CLIENTS[c]),
                    packet_id: PacketId::new(p).unwrap(),
                })
            }
            _ => {}
        }
    }
    out
}

/// The snapshot with what may legitimately differ made equal: subscription order (by
/// filter on disk), and the next message number (the disk store derives it from the
/// bodies it still holds).
fn normal(mut s: Snapshot) -> Snapshot {
    for v in s.sessions.values_mut() {
        v.subscriptions
            .sort_by(|a, b| a.0.filter.as_str().cmp(b.0.filter.as_str()));
    }
    s.next_seq = 0;
    s
}

fn check(ops: Vec<Op>, cuts: Vec<usize>) -> Result<(), TestCaseError> {
    let recs = records(&ops);
    let dir = TempDir::new("model");
    let mut mem = MemoryStore::new();
    {
        let (mut store, snap) = Store::open(&dir.0).unwrap();
        prop_assert_eq!(snap, Snapshot::default());
        let mut at = 0usize;
        for cut in cuts.into_iter().chain([usize::MAX]) {
            let end = at.saturating_add(cut).min(recs.len());
            store.write(&recs[at..end]).unwrap();
            for r in &recs[at..end] {
                mem.apply(r);
            }
            at = end;
            if at == recs.len() {
                break;
            }
        }
        store.sync().unwrap();
        prop_assert_eq!(store.counts().1, mem.bodies());
    }
    let (store, snap) = Store::open(&dir.0).unwrap();
    prop_assert_eq!(normal(snap), normal(mem.snapshot()));
    prop_assert_eq!(store.counts().1, mem.bodies());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn disk_store_agrees_with_the_memory_store(
        ops in proptest::collection::vec(op(), 1..80),
        cuts in proptest::collection::vec(1usize..20, 0..10),
    ) {
        check(ops, cuts)?;
    }
}

#[test]
fn a_session_and_its_messages_survive_a_reopen() {
    let dir = TempDir::new("reopen");
    let recs = records(&[
        Op::Session(0, 1),
        Op::Subscribe(0, 0, 2, 1),
        Op::Message(1, vec![(0, 2, false, true), (0, 1, true, false)]),
        Op::Received(0, 0),
        Op::Incoming(0, 3),
        Op::Retain(0, Some(9)),
    ]);
    {
        let (mut store, _) = Store::open(&dir.0).unwrap();
        store.write(&recs).unwrap();
        store.sync().unwrap();
    }
    let (_, snap) = Store::open(&dir.0).unwrap();
    let a = &snap.sessions["a"];
    assert_eq!(a.expiry, Duration::from_secs(101));
    assert_eq!(a.subscriptions.len(), 1);
    assert_eq!(a.messages.len(), 2);
    assert!(a.messages[0].received);
    assert_eq!(a.messages[0].publish.qos, QoS::ExactlyOnce);
    assert_eq!(a.messages[1].publish.packet_id, None);
    assert!(a.messages[1].publish.retain);
    assert_eq!(a.incoming_qos2.len(), 1);
    assert_eq!(snap.retained.len(), 1);
    assert_eq!(snap.next_seq, 1);
}

#[test]
fn when_a_session_went_offline_survives_a_reopen() {
    let dir = TempDir::new("offline");
    {
        let (mut store, _) = Store::open(&dir.0).unwrap();
        store
            .write(&records(&[Op::Session(0, 1), Op::Session(1, 1)]))
            .unwrap();
        store
            .write(&[
                Record::SessionOffline { client_id: s("a") },
                Record::SessionOffline { client_id: s("b") },
                // b's client came back: its expiry no longer runs.
                Record::SessionOnline { client_id: s("b") },
                // Not a stored session: nothing kept.
                Record::SessionOffline { client_id: s("c") },
            ])
            .unwrap();
        store.sync().unwrap();
    }
    let (mut store, snap) = Store::open(&dir.0).unwrap();
    // Written a moment ago (an hour is a bound no run comes near).
    let a = snap.sessions["a"].offline_for.expect("a went offline");
    assert!(a < Duration::from_secs(3600), "{a:?}");
    assert_eq!(snap.sessions["b"].offline_for, None);
    assert!(!snap.sessions.contains_key("c"));
    // Ending the session forgets when it went offline.
    store
        .write(&records(&[
            Op::Session(0, 1),
            Op::End(0),
            Op::Session(0, 1),
        ]))
        .unwrap();
    store.sync().unwrap();
    drop(store);
    let (_, snap) = Store::open(&dir.0).unwrap();
    assert_eq!(snap.sessions["a"].offline_for, None);
}

#[test]
fn ending_a_session_removes_everything_it_owned() {
    let dir = TempDir::new("end");
    let (mut store, _) = Store::open(&dir.0).unwrap();
    store
        .write(&records(&[
            Op::Session(0, 1),
            Op::Session(1, 1),
            Op::Subscribe(0, 0, 1, 0),
            Op::Message(1, vec![(0, 1, false, true), (1, 1, false, true)]),
            Op::Message(2, vec![(0, 1, false, false)]),
            Op::Incoming(0, 2),
            Op::End(0),
        ]))
        .unwrap();
    assert_eq!(store.counts(), (1, 1), "one session, one message body left");
    drop(store);
    let (_, snap) = Store::open(&dir.0).unwrap();
    assert_eq!(snap.sessions.keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(snap.sessions["b"].messages.len(), 1);
}

#[test]
fn an_unreadable_entry_is_reported_as_damage() {
    let dir = TempDir::new("corrupt");
    {
        let (mut store, _) = Store::open(&dir.0).unwrap();
        store
            .write(&records(&[
                Op::Session(0, 1),
                Op::Message(1, vec![(0, 1, false, true)]),
            ]))
            .unwrap();
        store.sync().unwrap();
    }
    {
        // Damage one message body behind the store's back.
        let db = fjall::Database::builder(&dir.0).open().unwrap();
        let ks = db
            .keyspace("messages", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        ks.insert(0u64.to_be_bytes(), b"garbage".as_slice())
            .unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let err = Store::open(&dir.0).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("damaged") && text.contains("message 0"),
        "{text}"
    );
    assert!(
        text.contains(dir.0.to_str().unwrap()),
        "names the directory: {text}"
    );
    // Moved aside, the broker starts empty.
    let aside = mqtt_store::move_aside(&dir.0).unwrap();
    let (_, snap) = Store::open(&dir.0).unwrap();
    assert_eq!(snap, Snapshot::default());
    let _ = std::fs::remove_dir_all(aside);
}

#[test]
fn damaged_files_are_refused_not_read_as_empty() {
    let dir = TempDir::new("files");
    {
        let (mut store, _) = Store::open(&dir.0).unwrap();
        store
            .write(&records(&[Op::Session(0, 1), Op::Subscribe(0, 0, 1, 0)]))
            .unwrap();
        store.sync().unwrap();
    }
    // Overwrite every file's contents with garbage of the same length.
    fn walk(p: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                walk(&e, out);
            } else {
                out.push(e);
            }
        }
    }
    let mut files = vec![];
    walk(&dir.0, &mut files);
    assert!(!files.is_empty());
    for f in files {
        let len = std::fs::metadata(&f).unwrap().len() as usize;
        std::fs::write(&f, vec![0xA5; len]).unwrap();
    }
    let r = Store::open(&dir.0);
    assert!(r.is_err(), "a damaged store must not open as if empty");
}

#[test]
fn another_format_is_refused() {
    let dir = TempDir::new("format");
    {
        let db = fjall::Database::builder(&dir.0).open().unwrap();
        let ks = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        ks.insert("format", b"something else".as_slice()).unwrap();
    }
    let err = Store::open(&dir.0).unwrap_err();
    assert!(matches!(err, StoreError::Format { .. }), "{err}");
}
