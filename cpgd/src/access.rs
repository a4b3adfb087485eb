//! Who may connect: root, the daemon's own user, and the users and groups
//! the `[ipc]` section lists (Corosync's `uidgid` entries). Decided from
//! `SO_PEERCRED`, never from anything the client says.

use cpg_ipc::PeerCred;

/// The access policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    own_uid: u32,
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl Access {
    /// The policy for a daemon running as `own_uid`.
    pub fn new(own_uid: u32, uids: &[u32], gids: &[u32]) -> Access {
        Access {
            own_uid,
            uids: uids.to_vec(),
            gids: gids.to_vec(),
        }
    }

    /// Whether `peer` may connect.
    pub fn allows(&self, peer: &PeerCred) -> bool {
        peer.uid == 0
            || peer.uid == self.own_uid
            || self.uids.contains(&peer.uid)
            || self.gids.contains(&peer.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_own_listed_uid_and_gid_only() {
        let a = Access::new(500, &[1000], &[985]);
        let p = |uid, gid| PeerCred { pid: 1, uid, gid };
        assert!(a.allows(&p(0, 0)));
        assert!(a.allows(&p(500, 1)));
        assert!(a.allows(&p(1000, 1)));
        assert!(a.allows(&p(7, 985)));
        assert!(!a.allows(&p(65534, 65534)));
    }
}
