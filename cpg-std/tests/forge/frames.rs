//! What the attacker sends, built with cpg-core's own wire emitters (the
//! control frames' integrity check is unkeyed FNV, so `emit_frame` computes
//! it for the attacker too), and what a sealed datagram shows of itself.

use cpg_core::hash::fnv1a64;
use cpg_core::seal::{FrameCipher, Mode, HEAD_LEN, NONCE_LEN, SEAL_OVERHEAD, TAG_LEN};
use cpg_core::wire::pack::{emit_packed, PackHeader};
use cpg_core::wire::{self, CpgMsg, JoinRepr, McastRepr, Packet};
use cpg_core::{GroupName, Guarantee, NodeId, Reason, RingId};
use cpg_uring::RingAesGcm;

/// A whole frame of `packet` from `sender`.
pub fn frame(cluster_id: u32, sender: NodeId, packet: &Packet<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; wire::frame_len(packet)];
    let n = wire::emit_frame(sender, cluster_id, packet, &mut buf).expect("emit frame");
    buf.truncate(n);
    buf
}

fn cpg(msg: &CpgMsg<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.emit(&mut buf).expect("emit cpg message");
    buf
}

fn group(name: &str) -> GroupName {
    GroupName::new(name.as_bytes()).unwrap()
}

/// A CPG JOIN of `(frame sender, pid)` to `name`.
pub fn cpg_join(pid: u32, name: &str) -> Vec<u8> {
    cpg(&CpgMsg::Join {
        pid,
        group: group(name),
        flags: 0,
    })
}

/// A CPG LEAVE of `(frame sender, pid)` from `name`.
pub fn cpg_leave(pid: u32, name: &str) -> Vec<u8> {
    cpg(&CpgMsg::Leave {
        pid,
        group: group(name),
        reason: Reason::Leave,
    })
}

/// An application message of `(frame sender, pid)` to `name`.
pub fn cpg_mcast(pid: u32, name: &str, data: &[u8]) -> Vec<u8> {
    cpg(&CpgMsg::Mcast {
        pid,
        group: group(name),
        guarantee: Guarantee::Agreed,
        payload: data,
    })
}

/// A Totem MCAST of `ring` at `seq` claiming `sender`, carrying `items`
/// (CPG messages) packed as the engine packs them.
pub fn mcast(
    cluster_id: u32,
    sender: NodeId,
    ring: RingId,
    seq: u32,
    items: &[Vec<u8>],
) -> Vec<u8> {
    let refs: Vec<&[u8]> = items.iter().map(|i| &i[..]).collect();
    let len = wire::pack::packed_len(refs.iter().map(|i| i.len()));
    let mut payload = vec![0u8; len];
    emit_packed(PackHeader::default(), &refs, 0, &mut payload).expect("pack");
    frame(
        cluster_id,
        sender,
        &Packet::Mcast(McastRepr {
            ring_id: ring,
            seq,
            guarantee: Guarantee::Agreed,
            encapsulated: false,
            payload: &payload,
        }),
    )
}

/// A Totem MCAST of `len` bytes in all (one opaque item).
pub fn mcast_of_len(
    cluster_id: u32,
    sender: NodeId,
    ring: RingId,
    seq: u32,
    len: usize,
) -> Vec<u8> {
    let overhead = wire::MCAST_HEADER_LEN + wire::pack::PACK_HEADER_LEN + 2;
    let item = vec![0x5a; len - overhead];
    let f = mcast(cluster_id, sender, ring, seq, &[item]);
    assert_eq!(f.len(), len);
    f
}

/// A Totem JOIN from `sender`: these nodes alive, those failed.
pub fn join(
    cluster_id: u32,
    sender: NodeId,
    ring_seq: u64,
    procs: &[NodeId],
    fail: &[NodeId],
) -> Vec<u8> {
    frame(
        cluster_id,
        sender,
        &Packet::Join(JoinRepr {
            ring_seq,
            leave: false,
            proc_list: procs.iter().copied().collect(),
            fail_list: fail.iter().copied().collect(),
        }),
    )
}

/// A MERGE_DETECT from `sender` naming `ring`.
pub fn merge_detect(cluster_id: u32, sender: NodeId, ring: RingId) -> Vec<u8> {
    frame(cluster_id, sender, &Packet::MergeDetect(ring))
}

/// The FNV-1a digest `cpgtool node` reports for a delivered body.
pub fn digest(body: &[u8]) -> String {
    format!("{:016x}", fnv1a64(body))
}

/// What a sealed datagram's trailer shows anyone: the nonce (sender node,
/// epoch, counter), the destination and the key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub node: NodeId,
    pub epoch: u32,
    pub counter: u32,
    pub dest: NodeId,
    pub key_id: [u8; 4],
}

impl Trailer {
    /// The trailer of a sealed datagram (`None` below its size).
    pub fn of(datagram: &[u8]) -> Option<Trailer> {
        let t = datagram.get(datagram.len().checked_sub(SEAL_OVERHEAD)?..)?;
        let word = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
        Some(Trailer {
            node: word(0),
            epoch: word(4),
            counter: word(8),
            dest: word(12),
            key_id: [t[16], t[17], t[18], t[19]],
        })
    }

    /// `frame` dressed as a sealed datagram with this trailer and a tag the
    /// attacker made up (it has no key): everything but the tag is right
    /// (the destination says "every peer", which every node accepts).
    pub fn dress(&self, frame: &[u8]) -> Vec<u8> {
        let mut d = frame.to_vec();
        d.extend_from_slice(&self.node.to_be_bytes());
        d.extend_from_slice(&self.epoch.to_be_bytes());
        d.extend_from_slice(&self.counter.to_be_bytes());
        d.extend_from_slice(&cpg_core::seal::DEST_ALL.to_be_bytes());
        d.extend_from_slice(&self.key_id);
        let h = fnv1a64(&d).to_le_bytes();
        for i in 0..TAG_LEN {
            d.push(h[i % 8] ^ i as u8);
        }
        d
    }
}

/// The test's own view of the frames inside sealed datagrams. The key is
/// the harness's (it wrote the key file), used only to read: to know the
/// ring id, token and seqs, so that the forged frames sent to a sealed
/// cluster are exactly the ones that work on an unsealed one. The forged
/// datagrams themselves are never sealed with it.
pub struct Reader {
    mode: Option<Mode>,
    cipher: Option<RingAesGcm>,
}

impl Reader {
    pub fn new(mode: Option<Mode>, key: Option<&cpg_core::seal::KeyMaterial>) -> Reader {
        Reader {
            mode,
            cipher: key.map(|k| RingAesGcm::with_key(k.aes256_key())),
        }
    }

    /// The frame a node's datagram carries (`None`: not opened).
    pub fn frame(&self, datagram: &[u8]) -> Option<Vec<u8>> {
        let Some(mode) = self.mode else {
            return Some(datagram.to_vec());
        };
        let n = datagram.len().checked_sub(SEAL_OVERHEAD)?;
        match mode {
            Mode::Authenticate => Some(datagram[..n].to_vec()),
            Mode::Encrypt => {
                let (frame, trailer) = datagram.split_at(n);
                let head = &trailer[..HEAD_LEN];
                let nonce: [u8; NONCE_LEN] = head[..NONCE_LEN].try_into().unwrap();
                let tag: [u8; TAG_LEN] = trailer[HEAD_LEN..].try_into().unwrap();
                let mut buf = frame.to_vec();
                self.cipher
                    .as_ref()?
                    .open(&nonce, head, &mut buf, &tag)
                    .ok()?;
                Some(buf)
            }
        }
    }
}
