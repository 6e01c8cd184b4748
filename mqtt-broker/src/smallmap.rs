//! A map for the many small maps of the broker: a session's subscriptions by filter, a
//! filter's subscribers by session.

use std::borrow::Borrow;
use std::collections::BTreeMap;

/// Up to this many entries the map is a sorted vector.
const SMALL: usize = 32;

/// A map in key order that holds one entry in place, more in a sorted vector, and becomes
/// a B-tree past [`SMALL`] entries. Most of these maps hold one entry or a few (a
/// session's own topic, a device's one subscriber): one entry costs no allocation, a few
/// their size, where a B-tree's first node takes room for eleven (192 bytes for a session
/// key and a subscription). Past [`SMALL`], inserting into a vector would move too much.
#[derive(Debug)]
pub(crate) enum SmallMap<K, V> {
    One(K, V),
    /// Empty, or two entries and more.
    Small(Vec<(K, V)>),
    Large(BTreeMap<K, V>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Small(Vec::new())
    }
}

impl<K: Ord, V> SmallMap<K, V> {
    pub(crate) fn len(&self) -> usize {
        match self {
            SmallMap::One(..) => 1,
            SmallMap::Small(v) => v.len(),
            SmallMap::Large(m) => m.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        match self {
            SmallMap::One(k, _) => <K as Borrow<Q>>::borrow(k) == key,
            SmallMap::Small(v) => find(v, key).is_ok(),
            SmallMap::Large(m) => m.contains_key(key),
        }
    }

    /// Adds or replaces the entry of `key`; the value it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            SmallMap::One(k, v) if *k == key => Some(std::mem::replace(v, value)),
            SmallMap::One(..) => {
                let SmallMap::One(k, v) = std::mem::take(self) else {
                    unreachable!("matched above")
                };
                let mut entries = Vec::with_capacity(2);
                if k < key {
                    entries.extend([(k, v), (key, value)]);
                } else {
                    entries.extend([(key, value), (k, v)]);
                }
                *self = SmallMap::Small(entries);
                None
            }
            SmallMap::Small(v) if v.is_empty() => {
                *self = SmallMap::One(key, value);
                None
            }
            SmallMap::Small(v) => match find(v, &key) {
                Ok(i) => Some(std::mem::replace(&mut v[i].1, value)),
                Err(i) if v.len() < SMALL => {
                    v.insert(i, (key, value));
                    None
                }
                Err(_) => {
                    let mut m: BTreeMap<K, V> = std::mem::take(v).into_iter().collect();
                    m.insert(key, value);
                    *self = SmallMap::Large(m);
                    None
                }
            },
            SmallMap::Large(m) => m.insert(key, value),
        }
    }

    /// Removes the entry of `key`; its value.
    pub(crate) fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        match self {
            SmallMap::One(k, _) => {
                if <K as Borrow<Q>>::borrow(k) != key {
                    return None;
                }
                let SmallMap::One(_, value) = std::mem::take(self) else {
                    unreachable!("matched above")
                };
                Some(value)
            }
            SmallMap::Small(v) => {
                let i = find(v, key).ok()?;
                let (_, value) = v.remove(i);
                if v.len() == 1 {
                    let (k, v) = v.pop().expect("one left");
                    *self = SmallMap::One(k, v);
                }
                Some(value)
            }
            SmallMap::Large(m) => m.remove(key),
        }
    }

    /// Every entry, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (one, small, large) = match self {
            SmallMap::One(k, v) => (Some((k, v)), None, None),
            SmallMap::Small(v) => (None, Some(v.iter().map(|(k, v)| (k, v))), None),
            SmallMap::Large(m) => (None, None, Some(m.iter())),
        };
        one.into_iter()
            .chain(small.into_iter().flatten())
            .chain(large.into_iter().flatten())
    }
}

fn find<K: Borrow<Q>, Q: Ord + ?Sized, V>(v: &[(K, V)], key: &Q) -> Result<usize, usize> {
    v.binary_search_by(|(k, _)| k.borrow().cmp(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map answers as a B-tree map of the same insertions and removals would, below
    /// and above the switch to a B-tree.
    #[test]
    fn behaves_as_a_btree_map() {
        let mut ours: SmallMap<String, u32> = SmallMap::default();
        let mut model: BTreeMap<String, u32> = BTreeMap::new();
        // A fixed pseudo-random sequence of inserts, replacements and removals.
        let mut x: u32 = 12345;
        for step in 0..2000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let name = format!("t/{}", (x >> 16) % 90);
            if (x >> 8).is_multiple_of(3) {
                assert_eq!(ours.remove(name.as_str()), model.remove(&name));
            } else {
                assert_eq!(
                    ours.insert(name.clone(), step),
                    model.insert(name.clone(), step)
                );
            }
            assert_eq!(ours.len(), model.len());
            assert_eq!(ours.contains_key(name.as_str()), model.contains_key(&name));
        }
        let got: Vec<(&String, &u32)> = ours.iter().collect();
        let want: Vec<(&String, &u32)> = model.iter().collect();
        assert_eq!(got, want);
        assert!(
            matches!(ours, SmallMap::Large(_)),
            "more than {SMALL} were held"
        );
    }

    /// One entry is held in place, two in a vector of two; back to one, in place again,
    /// and an empty map holds nothing.
    #[test]
    fn one_entry_holds_no_allocation() {
        let mut m: SmallMap<u64, u32> = SmallMap::default();
        m.insert(7, 1);
        assert!(matches!(m, SmallMap::One(7, 1)), "{m:?}");
        assert_eq!(m.insert(7, 2), Some(1));
        m.insert(3, 3);
        match &m {
            SmallMap::Small(v) => {
                assert_eq!(v.capacity(), 2);
                assert_eq!(v[..], [(3, 3), (7, 2)]);
            }
            other => panic!("two entries: {other:?}"),
        }
        assert_eq!(m.remove(&3), Some(3));
        assert!(matches!(m, SmallMap::One(7, 2)), "{m:?}");
        assert_eq!(m.remove(&8), None);
        assert_eq!(m.remove(&7), Some(2));
        assert_eq!(m.remove(&7), None);
        assert!(m.is_empty());
        assert!(
            matches!(&m, SmallMap::Small(v) if v.capacity() == 0),
            "{m:?}"
        );
    }
}
