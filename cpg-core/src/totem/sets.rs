//! Sorted node sets (ascending ids, no duplicates) on `NodeList`.

use crate::types::NodeId;
use crate::wire::NodeList;

/// Insert keeping order; returns whether it was added. A full list ignores
/// the insert (node lists are bounded by the configured node list anyway).
pub(crate) fn insert(set: &mut NodeList, n: NodeId) -> bool {
    match set.binary_search(&n) {
        Ok(_) => false,
        Err(pos) => set.insert(pos, n).is_ok(),
    }
}

pub(crate) fn contains(set: &[NodeId], n: NodeId) -> bool {
    set.binary_search(&n).is_ok()
}

/// Normalise an arbitrary list into a sorted set.
pub(crate) fn from_slice(items: &[NodeId]) -> NodeList {
    let mut s = NodeList::new();
    for &n in items {
        insert(&mut s, n);
    }
    s
}

pub(crate) fn union_into(set: &mut NodeList, other: &[NodeId]) -> bool {
    let mut changed = false;
    for &n in other {
        changed |= insert(set, n);
    }
    changed
}

pub(crate) fn minus(a: &[NodeId], b: &[NodeId]) -> NodeList {
    let mut s = NodeList::new();
    for &n in a {
        if !contains(b, n) {
            let _ = s.push(n);
        }
    }
    s
}

/// `a ⊆ b` (both sorted).
pub(crate) fn subset(a: &[NodeId], b: &[NodeId]) -> bool {
    a.iter().all(|&n| contains(b, n))
}
