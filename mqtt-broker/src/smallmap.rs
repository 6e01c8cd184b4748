//! A map for the many small maps of the broker: a session's subscriptions by filter, a
//! filter's subscribers by session.

use std::borrow::Borrow;
use std::collections::BTreeMap;

/// Up to this many entries the map is a sorted vector.
const SMALL: usize = 32;

/// A map in key order that starts as a sorted vector and becomes a B-tree past
/// [`SMALL`] entries. Most of these maps hold one entry or a few (a session's own topic,
/// a device's one subscriber): as a vector, one entry costs its size, where a B-tree's
/// first node takes room for eleven (192 bytes for a session key and a subscription).
/// Past [`SMALL`], inserting into a vector would move too much.
#[derive(Debug)]
pub(crate) enum SmallMap<K, V> {
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
            SmallMap::Small(v) => find(v, key).is_ok(),
            SmallMap::Large(m) => m.contains_key(key),
        }
    }

    /// Adds or replaces the entry of `key`; the value it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            SmallMap::Small(v) => match find(v, &key) {
                Ok(i) => Some(std::mem::replace(&mut v[i].1, value)),
                Err(i) if v.len() < SMALL => {
                    if v.capacity() == 0 {
                        v.reserve_exact(1);
                    }
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
            SmallMap::Small(v) => {
                let i = find(v, key).ok()?;
                let (_, value) = v.remove(i);
                if v.is_empty() {
                    *v = Vec::new();
                }
                Some(value)
            }
            SmallMap::Large(m) => m.remove(key),
        }
    }

    /// Every entry, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (small, large) = match self {
            SmallMap::Small(v) => (Some(v.iter().map(|(k, v)| (k, v))), None),
            SmallMap::Large(m) => (None, Some(m.iter())),
        };
        small
            .into_iter()
            .flatten()
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

    #[test]
    fn one_entry_holds_one_entry() {
        let mut m: SmallMap<u64, u32> = SmallMap::default();
        m.insert(7, 1);
        match &m {
            SmallMap::Small(v) => assert_eq!(v.capacity(), 1),
            SmallMap::Large(_) => panic!("one entry in a B-tree"),
        }
        assert_eq!(m.remove(&7), Some(1));
        assert_eq!(m.remove(&7), None);
        assert!(m.is_empty());
    }
}
