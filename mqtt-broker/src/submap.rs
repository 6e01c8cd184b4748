//! A session's subscriptions by topic filter.

use crate::tree::SubEntry;
use mqtt_proto::TopicFilter;
use std::collections::BTreeMap;

/// Up to this many subscriptions a session keeps them in a sorted vector.
const SMALL: usize = 32;

/// A session's subscriptions, in filter order. Most sessions hold a few, so they start as
/// a sorted vector (one subscription costs its entry, where a B-tree's first node has room
/// for eleven) and become a B-tree past [`SMALL`], where inserting into a vector would
/// move too much.
#[derive(Debug)]
pub(crate) enum SubMap {
    Small(Vec<(TopicFilter, SubEntry)>),
    Large(BTreeMap<String, (TopicFilter, SubEntry)>),
}

impl Default for SubMap {
    fn default() -> Self {
        SubMap::Small(Vec::new())
    }
}

impl SubMap {
    pub(crate) fn len(&self) -> usize {
        match self {
            SubMap::Small(v) => v.len(),
            SubMap::Large(m) => m.len(),
        }
    }

    pub(crate) fn contains_key(&self, filter: &str) -> bool {
        match self {
            SubMap::Small(v) => find(v, filter).is_ok(),
            SubMap::Large(m) => m.contains_key(filter),
        }
    }

    /// Adds or replaces the subscription of `filter`.
    pub(crate) fn insert(&mut self, filter: TopicFilter, entry: SubEntry) {
        match self {
            SubMap::Small(v) => match find(v, filter.as_str()) {
                Ok(i) => v[i] = (filter, entry),
                Err(i) if v.len() < SMALL => {
                    if v.capacity() == 0 {
                        v.reserve_exact(1);
                    }
                    v.insert(i, (filter, entry));
                }
                Err(_) => {
                    let mut m: BTreeMap<String, (TopicFilter, SubEntry)> = std::mem::take(v)
                        .into_iter()
                        .map(|(f, e)| (f.as_str().to_string(), (f, e)))
                        .collect();
                    m.insert(filter.as_str().to_string(), (filter, entry));
                    *self = SubMap::Large(m);
                }
            },
            SubMap::Large(m) => {
                m.insert(filter.as_str().to_string(), (filter, entry));
            }
        }
    }

    /// Removes the subscription of `filter`; whether there was one.
    pub(crate) fn remove(&mut self, filter: &str) -> bool {
        match self {
            SubMap::Small(v) => match find(v, filter) {
                Ok(i) => {
                    v.remove(i);
                    if v.is_empty() {
                        *v = Vec::new();
                    }
                    true
                }
                Err(_) => false,
            },
            SubMap::Large(m) => m.remove(filter).is_some(),
        }
    }

    /// Every subscription, in filter order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &(TopicFilter, SubEntry)> {
        let (small, large) = match self {
            SubMap::Small(v) => (Some(v.iter()), None),
            SubMap::Large(m) => (None, Some(m.values())),
        };
        small
            .into_iter()
            .flatten()
            .chain(large.into_iter().flatten())
    }
}

fn find(v: &[(TopicFilter, SubEntry)], filter: &str) -> Result<usize, usize> {
    v.binary_search_by(|(f, _)| f.as_str().cmp(filter))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_proto::{QoS, SubscriptionOptions};

    fn entry(qos: QoS) -> SubEntry {
        SubEntry {
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
            id: None,
        }
    }

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::new(s).unwrap()
    }

    /// The map answers as a B-tree map of the same insertions and removals would, below
    /// and above the switch to a B-tree.
    #[test]
    fn behaves_as_a_btree_map() {
        let mut ours = SubMap::default();
        let mut model: BTreeMap<String, QoS> = BTreeMap::new();
        // A fixed pseudo-random sequence of inserts, replacements and removals.
        let mut x: u32 = 12345;
        for step in 0..2000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let name = format!("t/{}", (x >> 16) % 90);
            let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][step % 3];
            if (x >> 8).is_multiple_of(3) {
                assert_eq!(ours.remove(&name), model.remove(&name).is_some());
            } else {
                ours.insert(filter(&name), entry(qos));
                model.insert(name.clone(), qos);
            }
            assert_eq!(ours.len(), model.len());
            assert_eq!(ours.contains_key(&name), model.contains_key(&name));
        }
        let got: Vec<(String, QoS)> = ours
            .values()
            .map(|(f, e)| (f.as_str().to_string(), e.options.qos))
            .collect();
        let want: Vec<(String, QoS)> = model.into_iter().collect();
        assert_eq!(got, want);
        assert!(
            matches!(ours, SubMap::Large(_)),
            "more than {SMALL} were held"
        );
    }

    #[test]
    fn one_subscription_holds_one_entry() {
        let mut m = SubMap::default();
        m.insert(filter("a/b"), entry(QoS::AtLeastOnce));
        match &m {
            SubMap::Small(v) => assert_eq!(v.capacity(), 1),
            SubMap::Large(_) => panic!("one subscription in a B-tree"),
        }
        assert!(m.remove("a/b"));
        assert!(!m.remove("a/b"));
        assert_eq!(m.len(), 0);
    }
}
