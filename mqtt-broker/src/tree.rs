//! The subscription tree: topic filters by level, with `+`, `#` and shared subscription
//! groups, answering "which sessions want this topic".

use crate::smallmap::SmallMap;
use mqtt_proto::{SubscriptionOptions, TopicFilter};
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;

/// A session's key in the broker.
pub type SessionKey = u64;

/// One subscription: its options and 5.0 Subscription Identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubEntry {
    /// The subscription options.
    pub options: SubscriptionOptions,
    /// The Subscription Identifier (5.0).
    pub id: Option<NonZeroU32>,
}

#[derive(Debug)]
struct SharedGroup {
    /// The whole `$share/{group}/{filter}`.
    filter: TopicFilter,
    members: BTreeMap<SessionKey, SubEntry>,
    /// Round-robin cursor: the member after this key is next.
    last: Option<SessionKey>,
}

/// A level's name as a child key: hashed and compared as bytes, so a lookup by `&str`
/// needs no UTF-8 check.
type Level = smallvec::SmallVec<[u8; 16]>;

/// A node's index in [`SubscriptionTree::nodes`].
type NodeId = usize;

/// The root node's index.
const ROOT: NodeId = 0;

/// A level of the tree. Most nodes are leaves with one subscriber and no shared group:
/// the child and group maps are allocated only when there is something in them, and the
/// node is 48 bytes instead of 104.
#[derive(Debug, Default)]
// Boxed maps on purpose: `None` is 8 bytes, an empty map 48 (`HashMap`) or 24.
#[allow(clippy::box_collection)]
struct Node {
    /// By level name: names up to 16 bytes (most: device ids, words) are held in the
    /// key itself rather than in an allocation of their own.
    children: Option<Box<HashMap<Level, NodeId>>>,
    /// The (non-shared) subscribers, in key order.
    subs: SmallMap<SessionKey, SubEntry>,
    shared: Option<Box<BTreeMap<Box<str>, SharedGroup>>>,
}

impl Node {
    /// Nothing in it: the maps are `None` whenever they are empty.
    fn is_empty(&self) -> bool {
        self.children.is_none() && self.subs.is_empty() && self.shared.is_none()
    }

    fn child(&self, level: &str) -> Option<NodeId> {
        self.children.as_ref()?.get(level.as_bytes()).copied()
    }

    fn add_child(&mut self, level: &str, child: NodeId) {
        self.children
            .get_or_insert_with(Default::default)
            .insert(Level::from_slice(level.as_bytes()), child);
    }

    fn remove_child(&mut self, level: &str) {
        if let Some(c) = &mut self.children {
            c.remove(level.as_bytes());
            if c.is_empty() {
                self.children = None;
            }
        }
    }
}

/// A matching subscription found by [`SubscriptionTree::route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The subscribing session.
    pub key: SessionKey,
    /// Its subscription.
    pub entry: SubEntry,
    /// The `$share/...` filter, if picked from a shared subscription group.
    pub shared: Option<TopicFilter>,
}

/// Subscriptions by topic filter level.
///
/// Shared subscriptions (`$share/{group}/{filter}`) are stored at their filter's node,
/// per group; each message matching a group goes to one member, chosen round robin among
/// the members for which `is_online` says true (any member if none is online).
///
/// The nodes live in one vector and refer to their children by index, and every walk
/// is a loop: a filter or topic of any depth (tens of thousands of levels fit in a
/// packet) costs no stack, neither to route nor to drop.
#[derive(Debug)]
pub struct SubscriptionTree {
    /// The nodes; `nodes[ROOT]` is the root. Removed nodes are reset and listed in `free`.
    nodes: Vec<Node>,
    free: Vec<NodeId>,
    count: usize,
}

impl Default for SubscriptionTree {
    fn default() -> Self {
        Self {
            nodes: vec![Node::default()],
            free: vec![],
            count: 0,
        }
    }
}

impl SubscriptionTree {
    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds or replaces a session's subscription. Returns true if it is new.
    pub fn insert(&mut self, filter: &TopicFilter, key: SessionKey, entry: SubEntry) -> bool {
        let (group, inner) = split(filter);
        let mut node = ROOT;
        for level in inner.split('/') {
            node = match self.nodes[node].child(level) {
                Some(child) => child,
                None => {
                    let child = self.alloc();
                    self.nodes[node].add_child(level, child);
                    child
                }
            };
        }
        let node = &mut self.nodes[node];
        let old = match group {
            Some(g) => node
                .shared
                .get_or_insert_with(Default::default)
                .entry(g.into())
                .or_insert_with(|| SharedGroup {
                    filter: filter.clone(),
                    members: BTreeMap::new(),
                    last: None,
                })
                .members
                .insert(key, entry),
            None => node.subs.insert(key, entry),
        };
        if old.is_none() {
            self.count += 1;
        }
        old.is_none()
    }

    /// Removes a session's subscription. Returns true if it existed.
    pub fn remove(&mut self, filter: &TopicFilter, key: SessionKey) -> bool {
        let (group, inner) = split(filter);
        let levels: Vec<&str> = inner.split('/').collect();
        // The path from the root: path[i] is the node of levels[..i].
        let mut path = Vec::with_capacity(levels.len() + 1);
        path.push(ROOT);
        for level in &levels {
            let Some(child) = self.nodes[*path.last().expect("not empty")].child(level) else {
                return false;
            };
            path.push(child);
        }
        let node = &mut self.nodes[*path.last().expect("not empty")];
        let removed = match group {
            Some(g) => match node.shared.as_mut() {
                Some(groups) => {
                    let removed = groups
                        .get_mut(g)
                        .is_some_and(|sg| sg.members.remove(&key).is_some());
                    if groups.get(g).is_some_and(|sg| sg.members.is_empty()) {
                        groups.remove(g);
                    }
                    if groups.is_empty() {
                        node.shared = None;
                    }
                    removed
                }
                None => false,
            },
            None => node.subs.remove(&key).is_some(),
        };
        // Prune the nodes left empty, from the leaf up.
        for i in (1..path.len()).rev() {
            if !self.nodes[path[i]].is_empty() {
                break;
            }
            self.nodes[path[i - 1]].remove_child(levels[i - 1]);
            self.free.push(path[i]);
        }
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// The next member of one shared group (see [`SubscriptionTree::route`] for the
    /// choice), for a message that has to go to another member.
    pub fn pick_shared(
        &mut self,
        filter: &TopicFilter,
        is_online: impl Fn(SessionKey) -> bool,
    ) -> Option<Match> {
        let (group, inner) = split(filter);
        let mut node = ROOT;
        for level in inner.split('/') {
            node = self.nodes[node].child(level)?;
        }
        let g = self.nodes[node].shared.as_mut()?.get_mut(group?)?;
        let (key, entry) = pick(g, &is_online)?;
        Some(Match {
            key,
            entry,
            shared: Some(g.filter.clone()),
        })
    }

    /// Every subscription matching `topic`, at most one member per shared group.
    pub fn route(
        &mut self,
        topic: &str,
        is_online: impl Fn(SessionKey) -> bool,
        out: &mut Vec<Match>,
    ) {
        let levels: Vec<&str> = topic.split('/').collect();
        // [MQTT-4.7.2-1]: a leading wildcard does not match a topic starting with '$'.
        let dollar = topic.starts_with('$');
        // Depth first, in the order a recursive walk would take: at each node `#`, then
        // (at the end of the topic) the node itself, then the `+` subtree, then the
        // literal one.
        let mut stack = vec![(ROOT, 0usize)];
        while let Some((node, i)) = stack.pop() {
            let wild = !(i == 0 && dollar);
            let n = &self.nodes[node];
            let hash = n.child("#").filter(|_| wild);
            let plus = n.child("+").filter(|_| wild);
            let literal = levels
                .get(i)
                .filter(|l| **l != "+" && **l != "#")
                .and_then(|l| n.child(l));
            // '#' matches this level and everything below, and the parent level itself.
            if let Some(h) = hash {
                collect(&mut self.nodes[h], &is_online, out);
            }
            if i == levels.len() {
                collect(&mut self.nodes[node], &is_online, out);
                continue;
            }
            if let Some(c) = literal {
                stack.push((c, i + 1));
            }
            if let Some(p) = plus {
                stack.push((p, i + 1));
            }
        }
    }

    fn alloc(&mut self) -> NodeId {
        match self.free.pop() {
            Some(id) => {
                self.nodes[id] = Node::default();
                id
            }
            None => {
                self.nodes.push(Node::default());
                self.nodes.len() - 1
            }
        }
    }
}

fn split(filter: &TopicFilter) -> (Option<&str>, &str) {
    match filter.shared() {
        Some((g, f)) => (Some(g), f),
        None => (None, filter.as_str()),
    }
}

fn collect(node: &mut Node, is_online: &impl Fn(SessionKey) -> bool, out: &mut Vec<Match>) {
    out.extend(node.subs.iter().map(|(k, e)| Match {
        key: *k,
        entry: e.clone(),
        shared: None,
    }));
    for g in node
        .shared
        .iter_mut()
        .flat_map(|groups| groups.values_mut())
    {
        if let Some((k, e)) = pick(g, is_online) {
            out.push(Match {
                key: k,
                entry: e,
                shared: Some(g.filter.clone()),
            });
        }
    }
}

/// Round robin: the first member after the cursor that is online, else the first after
/// the cursor.
fn pick(
    g: &mut SharedGroup,
    is_online: &impl Fn(SessionKey) -> bool,
) -> Option<(SessionKey, SubEntry)> {
    let after = g.last.map_or(0, |l| l.wrapping_add(1));
    let order = g
        .members
        .range(after..)
        .chain(g.members.range(..after))
        .map(|(k, e)| (*k, e));
    let mut first = None;
    let mut chosen = None;
    for (k, e) in order {
        if first.is_none() {
            first = Some((k, e.clone()));
        }
        if is_online(k) {
            chosen = Some((k, e.clone()));
            break;
        }
    }
    let chosen = chosen.or(first)?;
    g.last = Some(chosen.0);
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_proto::matches;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::new(s).unwrap()
    }

    fn entry() -> SubEntry {
        SubEntry {
            options: SubscriptionOptions::default(),
            id: None,
        }
    }

    fn keys(t: &mut SubscriptionTree, topic: &str) -> Vec<SessionKey> {
        let mut out = vec![];
        t.route(topic, |_| true, &mut out);
        let mut k: Vec<_> = out.into_iter().map(|m| m.key).collect();
        k.sort();
        k
    }

    /// Every subscribed idle connection has a node of its own, most of them leaves.
    #[test]
    fn nodes_are_small() {
        assert!(
            std::mem::size_of::<Node>() <= 48,
            "{}",
            std::mem::size_of::<Node>()
        );
        // Shared groups come and go, and the node with them.
        let mut t = SubscriptionTree::default();
        assert!(t.insert(&f("$share/g/a"), 1, entry()));
        assert!(t.insert(&f("$share/h/a"), 2, entry()));
        assert!(t.remove(&f("$share/g/a"), 1));
        assert!(t.nodes[t.nodes[ROOT].child("a").unwrap()].shared.is_some());
        assert!(t.remove(&f("$share/h/a"), 2));
        assert!(t.nodes[ROOT].is_empty() && t.is_empty());
    }

    /// A filter's subscribers, few (a sorted vector) or many (a B-tree), are routed in
    /// key order, replaced in place, and removed down to an empty, pruned tree.
    #[test]
    fn many_subscribers_on_one_filter() {
        let mut t = SubscriptionTree::default();
        let keys: Vec<SessionKey> = (0..64).map(|i| (i * 37) % 101).collect();
        for (n, &k) in keys.iter().enumerate() {
            assert!(t.insert(&f("a/b"), k, entry()));
            let mut out = vec![];
            t.route("a/b", |_| true, &mut out);
            let got: Vec<_> = out.iter().map(|m| m.key).collect();
            let mut want = keys[..=n].to_vec();
            want.sort();
            assert_eq!(got, want, "in key order after {} inserts", n + 1);
        }
        // Replacing keeps one entry per session, with the new options.
        let mut e = entry();
        e.id = NonZeroU32::new(9);
        assert!(!t.insert(&f("a/b"), keys[3], e.clone()));
        assert_eq!(t.len(), keys.len());
        let mut out = vec![];
        t.route("a/b", |_| true, &mut out);
        assert_eq!(out.iter().find(|m| m.key == keys[3]).unwrap().entry, e);
        for &k in &keys {
            assert!(t.remove(&f("a/b"), k));
            assert!(!t.remove(&f("a/b"), k));
        }
        assert!(t.is_empty());
        assert!(t.nodes[ROOT].is_empty(), "the emptied path is pruned");
    }

    #[test]
    fn agrees_with_matches() {
        let filters = [
            "#", "+", "a", "a/b", "a/+", "a/#", "+/b", "+/+", "a/b/c", "a/+/c", "+/#", "$SYS/#",
            "$SYS/+", "/+", "a//b", "a/b/#",
        ];
        let topics = [
            "a", "a/b", "a/c", "b/b", "a/b/c", "a/x/c", "$SYS/x", "$SYS", "/x", "a//b", "x/y/z",
        ];
        let mut t = SubscriptionTree::default();
        for (i, fl) in filters.iter().enumerate() {
            t.insert(&f(fl), i as u64, entry());
        }
        for topic in topics {
            let expected: Vec<u64> = filters
                .iter()
                .enumerate()
                .filter(|(_, fl)| matches(fl, topic))
                .map(|(i, _)| i as u64)
                .collect();
            assert_eq!(keys(&mut t, topic), expected, "{topic}");
        }
    }

    #[test]
    fn remove_prunes() {
        let mut t = SubscriptionTree::default();
        assert!(t.insert(&f("a/b/c"), 1, entry()));
        assert!(!t.insert(&f("a/b/c"), 1, entry()));
        assert_eq!(t.len(), 1);
        assert!(t.remove(&f("a/b/c"), 1));
        assert!(!t.remove(&f("a/b/c"), 1));
        assert!(t.nodes[ROOT].is_empty());
        assert_eq!(t.free.len(), 3);
        assert!(t.is_empty());
        // Freed nodes are used again.
        assert!(t.insert(&f("x/y"), 1, entry()));
        assert_eq!((t.nodes.len(), t.free.len()), (4, 1));
        // A node that still holds something stays.
        assert!(t.insert(&f("x"), 2, entry()));
        assert!(t.remove(&f("x/y"), 1));
        assert_eq!(keys(&mut t, "x"), [2]);
        assert_eq!(t.free.len(), 2);
    }

    #[test]
    fn any_depth_costs_no_stack() {
        // 30,000 levels (what fits in a topic): more than a recursive walk survives on a
        // 2 MiB stack.
        let deep = vec!["a"; 30_000].join("/");
        let wild = format!("{}/#", vec!["+"; 29_999].join("/"));
        let mut t = SubscriptionTree::default();
        assert!(t.insert(&f(&deep), 1, entry()));
        assert!(t.insert(&f(&wild), 2, entry()));
        assert_eq!(keys(&mut t, &deep), [1, 2]);
        assert!(t.remove(&f(&deep), 1));
        assert_eq!(keys(&mut t, &deep), [2]);
        // Dropped with a subscription still in it.
        drop(t);
    }

    #[test]
    fn shared_round_robin_prefers_online() {
        let mut t = SubscriptionTree::default();
        for k in [1, 2, 3] {
            t.insert(&f("$share/g/a/+"), k, entry());
        }
        let mut got = vec![];
        for _ in 0..6 {
            let mut out = vec![];
            t.route("a/x", |_| true, &mut out);
            assert_eq!(out.len(), 1);
            got.push(out[0].key);
        }
        assert_eq!(got, [1, 2, 3, 1, 2, 3]);
        let mut out = vec![];
        t.route("a/x", |k| k == 3, &mut out);
        t.route("a/x", |k| k == 3, &mut out);
        assert_eq!(out.iter().map(|m| m.key).collect::<Vec<_>>(), [3, 3]);
        assert!(t.remove(&f("$share/g/a/+"), 3));
        assert_eq!(t.len(), 2);
    }
}
