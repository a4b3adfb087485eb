//! Packing and fragmentation ("totempg"): the send queues that turn
//! application messages into frames at token time, and the per-sender
//! assemblies that turn delivered frames back into whole messages.
//!
//! Small messages share a frame; a message that does not fit is cut into
//! pieces over consecutive frames of its sender (`fragmented = k` on a frame
//! whose last item continues, `continuation = k` on the next). A message is
//! delivered whole or not at all: partial assemblies are dropped at every
//! regular configuration, and a sender re-sends from the start a message it
//! had only partly sent when its ring changed (`docs/spec/totem.md` §6.4 **[we]**).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Range;

use crate::frame::{FrameBuf, FrameRef, Payload};
use crate::types::{Guarantee, NodeId};
use crate::wire::pack::{PackHeader, Packed, PACK_HEADER_LEN, PACK_ITEM_OVERHEAD, PACK_PAD_MAX};
use crate::wire::MCAST_HEADER_LEN;

/// Bytes of headroom a zero-copy message needs to become a frame in place:
/// frame + MCAST headers and a one-item packing header.
pub(crate) const ZC_HEADROOM: usize = MCAST_HEADER_LEN + PACK_HEADER_LEN + PACK_ITEM_OVERHEAD;

#[derive(Debug, Clone)]
struct OutMsg<F> {
    /// Where the message lives: `Own` (copied at submit), `Rx` (the
    /// application's zero-copy buffer, the CPG header written into its
    /// headroom) or `Gather` (the CPG header in engine memory, then the
    /// payload in a buffer that is never written nor copied).
    src: FrameRef<F>,
    /// The message's byte range inside `src` (its segments concatenated).
    msg: Range<usize>,
    guarantee: Guarantee,
    /// Bytes already placed in frames.
    offset: usize,
    /// Fragment number of the frame that carried the previous piece.
    frag: u8,
}

impl<F> OutMsg<F> {
    /// Whether the message goes out in frames of its own, read from its
    /// buffer by reference: a zero-copy message of at least `zc_threshold`
    /// bytes, and any message whose buffer must not be copied (`Gather`).
    /// Others are packed with their neighbours by copy.
    fn own_frames(&self, zc_threshold: usize) -> bool {
        match self.src {
            FrameRef::Gather { .. } => true,
            FrameRef::Rx(_) => self.msg.len() >= zc_threshold,
            FrameRef::Own(_) | FrameRef::Slot { .. } => false,
        }
    }
}

/// One of this node's messages (or a piece of it) inside one of its frames:
/// self-delivery reads these instead of re-parsing the frame, so a node
/// delivers its own fragmented messages from the original buffer.
#[derive(Debug, Clone)]
pub(crate) struct OwnItem<F> {
    pub src: FrameRef<F>,
    /// The whole message's range in `src`.
    pub msg: Range<usize>,
    /// This frame carries the message's last byte.
    pub complete: bool,
    pub guarantee: Guarantee,
}

/// What one frame will carry.
#[derive(Debug)]
pub(crate) enum FramePlan<F> {
    /// Messages or pieces copied into a packed frame.
    Packed {
        header: PackHeader,
        guarantee: Guarantee,
        pieces: Vec<(FrameRef<F>, Range<usize>)>,
        own: Vec<OwnItem<F>>,
        /// Zero bytes after the items: the gap too small for another item
        /// (so a full frame is exactly `cap` bytes; see `wire::pack`).
        pad: usize,
    },
    /// A zero-copy message alone in a frame, headers written into its headroom.
    InPlace {
        buf: F,
        msg: Range<usize>,
        guarantee: Guarantee,
    },
    /// One piece of a zero-copy message, `own.src[piece]`, sent after
    /// engine-built headers: the bytes of it inside the source's `head` (a
    /// CPG header kept outside the buffer) are copied into the frame's
    /// headers, the rest is read from the buffer.
    Piece {
        header: PackHeader,
        piece: Range<usize>,
        own: OwnItem<F>,
    },
}

/// `src[piece]` of a zero-copy message as its frame carries it: the part
/// inside the source's `head` (the CPG header of a buffer that keeps its
/// headers outside; none for `Rx`), which goes into the frame's headers,
/// then the buffer and the range of the rest inside it, sent by reference.
pub(crate) fn piece_parts<F>(
    src: &FrameRef<F>,
    piece: Range<usize>,
) -> Option<(&[u8], &F, Range<usize>)> {
    match src {
        FrameRef::Rx(buf) => Some((&[], buf, piece)),
        FrameRef::Gather { head, buf, range } => {
            let hl = head.len();
            let in_head = head.get(piece.start.min(hl)..piece.end.min(hl))?;
            let at = |i: usize| range.start + i.saturating_sub(hl);
            let rest = at(piece.start)..at(piece.end);
            (rest.end <= range.end).then_some((in_head, buf, rest))
        }
        FrameRef::Own(_) | FrameRef::Slot { .. } => None,
    }
}

/// A FIFO of application messages waiting for the token.
#[derive(Debug, Clone)]
pub(crate) struct SendQueue<F> {
    msgs: VecDeque<OutMsg<F>>,
    /// Unsent bytes.
    bytes: usize,
    /// Queued messages whose buffer keeps its headers outside: each takes
    /// frames of its own, however short (see `frames_estimate`).
    gather: usize,
}

impl<F> Default for SendQueue<F> {
    fn default() -> Self {
        SendQueue {
            msgs: VecDeque::new(),
            bytes: 0,
            gather: 0,
        }
    }
}

impl<F: FrameBuf> SendQueue<F> {
    /// Queue a message copied into engine memory.
    pub(crate) fn push(&mut self, data: Arc<[u8]>, guarantee: Guarantee) {
        let len = data.len();
        self.bytes += len;
        self.msgs.push_back(OutMsg {
            src: FrameRef::Own(data),
            msg: 0..len,
            guarantee,
            offset: 0,
            frag: 0,
        });
    }

    /// Queue `data[msg]`, a message inside an allocation shared with other
    /// queued messages (a batch copied at submit).
    pub(crate) fn push_shared(
        &mut self,
        data: &Arc<[u8]>,
        msg: Range<usize>,
        guarantee: Guarantee,
    ) {
        self.bytes += msg.len();
        self.msgs.push_back(OutMsg {
            src: FrameRef::Own(data.clone()),
            msg,
            guarantee,
            offset: 0,
            frag: 0,
        });
    }

    /// How many messages of these lengths, pushed one by one, the queue
    /// takes before `frames_estimate(cap)` reaches `limit` (the check
    /// `submit` makes before every push), and their total length.
    pub(crate) fn accepts(
        &self,
        cap: usize,
        limit: usize,
        lens: impl Iterator<Item = usize>,
    ) -> (usize, usize) {
        let cap = cap.max(1);
        let (mut bytes, mut n, mut k, mut taken) = (self.bytes, self.msgs.len(), 0, 0);
        for len in lens {
            let estimate = if n == 0 {
                0
            } else {
                (bytes + n * PACK_ITEM_OVERHEAD).div_ceil(cap).max(1) + self.gather
            };
            if estimate >= limit {
                break;
            }
            bytes += len;
            n += 1;
            k += 1;
            taken += len;
        }
        (k, taken)
    }

    /// Queue a zero-copy message: `buf[msg]` (CPG header included).
    pub(crate) fn push_zc(&mut self, buf: F, msg: Range<usize>, guarantee: Guarantee) {
        self.bytes += msg.len();
        self.msgs.push_back(OutMsg {
            src: FrameRef::Rx(buf),
            msg,
            guarantee,
            offset: 0,
            frag: 0,
        });
    }

    /// Queue a message whose buffer is never written nor copied: `head`
    /// (its CPG header, engine memory) followed by `buf[payload]`.
    pub(crate) fn push_gather(
        &mut self,
        head: Arc<[u8]>,
        buf: F,
        payload: Range<usize>,
        guarantee: Guarantee,
    ) {
        let len = head.len() + payload.len();
        self.bytes += len;
        self.gather += 1;
        self.msgs.push_back(OutMsg {
            src: FrameRef::Gather {
                head,
                buf,
                range: payload,
            },
            msg: 0..len,
            guarantee,
            offset: 0,
            frag: 0,
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Frames the queue still needs with `cap` payload bytes per frame (an
    /// upper bound: every message may start a frame of its own). A message
    /// whose headers stay outside its buffer is never packed with others,
    /// so it counts a frame more: a queue of short ones needs one frame each.
    pub(crate) fn frames_estimate(&self, cap: usize) -> usize {
        if self.msgs.is_empty() {
            0
        } else {
            (self.bytes + self.msgs.len() * PACK_ITEM_OVERHEAD)
                .div_ceil(cap.max(1))
                .max(1)
                + self.gather
        }
    }

    /// Restart a partly sent head message from its first byte (its pieces
    /// already sent were discarded with the old configuration). Returns
    /// whether there was one.
    pub(crate) fn restart_partial(&mut self) -> bool {
        match self.msgs.front_mut() {
            Some(head) if head.offset > 0 => {
                self.bytes += head.offset;
                head.offset = 0;
                head.frag = 0;
                true
            }
            _ => false,
        }
    }

    fn next_frag(counter: &mut u8) -> u8 {
        *counter = if *counter == u8::MAX { 1 } else { *counter + 1 };
        *counter
    }

    /// Plan one frame of `cap` payload bytes (packing header included).
    /// Zero-copy messages of at least `zc_threshold` bytes, and every
    /// message whose buffer keeps its headers outside, get frames of their
    /// own and are never copied; smaller ones are packed by copy.
    pub(crate) fn take_frame(
        &mut self,
        cap: usize,
        frag_counter: &mut u8,
        zc_threshold: usize,
    ) -> Option<FramePlan<F>> {
        let head = self.msgs.front_mut()?;
        if head.own_frames(zc_threshold) {
            let remaining = head.msg.len() - head.offset;
            let single =
                head.offset == 0 && remaining + PACK_HEADER_LEN + PACK_ITEM_OVERHEAD <= cap;
            // Only a buffer whose CPG header is in its headroom takes the
            // frame headers there too; `unique_mut` is never asked of any other.
            let in_place = single
                && head.msg.start >= ZC_HEADROOM
                && match &mut head.src {
                    FrameRef::Rx(buf) => buf.unique_mut().is_some(),
                    _ => false,
                };
            if in_place {
                let m = self.msgs.pop_front()?;
                self.bytes -= remaining;
                let FrameRef::Rx(buf) = m.src else {
                    return None;
                };
                return Some(FramePlan::InPlace {
                    buf,
                    msg: m.msg,
                    guarantee: m.guarantee,
                });
            }
            let piece_len = remaining
                .min(cap - PACK_HEADER_LEN - PACK_ITEM_OVERHEAD)
                .min(u16::MAX as usize);
            let mut header = PackHeader::default();
            if head.offset > 0 {
                header.continuation = head.frag;
            }
            let start = head.msg.start + head.offset;
            let piece = start..start + piece_len;
            let complete = piece_len == remaining;
            let own = OwnItem {
                src: head.src.clone(),
                msg: head.msg.clone(),
                complete,
                guarantee: head.guarantee,
            };
            self.bytes -= piece_len;
            if complete {
                if let Some(OutMsg {
                    src: FrameRef::Gather { .. },
                    ..
                }) = self.msgs.pop_front()
                {
                    self.gather -= 1;
                }
            } else {
                header.fragmented = Self::next_frag(frag_counter);
                head.frag = header.fragmented;
                head.offset += piece_len;
            }
            return Some(FramePlan::Piece { header, piece, own });
        }

        let mut header = PackHeader::default();
        let mut guarantee: Option<Guarantee> = None;
        let mut pieces = Vec::new();
        let mut own = Vec::new();
        let mut used = PACK_HEADER_LEN;
        while let Some(head) = self.msgs.front_mut() {
            if used + PACK_ITEM_OVERHEAD >= cap {
                break;
            }
            if head.own_frames(zc_threshold) {
                break; // it gets frames of its own
            }
            let avail = (cap - used - PACK_ITEM_OVERHEAD).min(u16::MAX as usize);
            let remaining = head.msg.len() - head.offset;
            if pieces.is_empty() && head.offset > 0 {
                header.continuation = head.frag;
            }
            let g = guarantee.get_or_insert(head.guarantee);
            if head.guarantee.is_safe() {
                *g = Guarantee::Safe;
            }
            let start = head.msg.start + head.offset;
            if remaining <= avail {
                pieces.push((head.src.clone(), start..head.msg.end));
                own.push(OwnItem {
                    src: head.src.clone(),
                    msg: head.msg.clone(),
                    complete: true,
                    guarantee: head.guarantee,
                });
                used += PACK_ITEM_OVERHEAD + remaining;
                self.bytes -= remaining;
                self.msgs.pop_front();
                continue;
            }
            header.fragmented = Self::next_frag(frag_counter);
            pieces.push((head.src.clone(), start..start + avail));
            own.push(OwnItem {
                src: head.src.clone(),
                msg: head.msg.clone(),
                complete: false,
                guarantee: head.guarantee,
            });
            head.offset += avail;
            head.frag = header.fragmented;
            self.bytes -= avail;
            used += PACK_ITEM_OVERHEAD + avail;
            break;
        }
        if pieces.is_empty() {
            return None;
        }
        // Frames of a burst are all `cap` bytes, one UDP GSO run: a piece
        // of the next message fills whatever room an item can use, and a
        // gap no item fits is padded unless this frame ends the burst.
        let gap = cap.saturating_sub(used);
        let more = !self.msgs.is_empty();
        Some(FramePlan::Packed {
            header,
            guarantee: guarantee.unwrap_or(Guarantee::Agreed),
            pieces,
            own,
            pad: if more && gap <= PACK_PAD_MAX { gap } else { 0 },
        })
    }
}

/// `n` zero bytes in their final allocation (a TrustedLen iterator: one
/// allocation, no second copy as `Arc::from(Vec)` would make).
fn zeroed(n: usize) -> Arc<[u8]> {
    core::iter::repeat_n(0u8, n).collect()
}

/// A reassembled message in a buffer more than this many times its length
/// (the sender's previous message was much larger) is copied into one of
/// its own size, so a small message never holds a large buffer.
const OVERSIZE_FACTOR: usize = 4;
/// Buffers up to this size are delivered as they are, oversized or not.
const OVERSIZE_MIN: usize = 64 << 10;

#[derive(Debug, Clone)]
struct Assembly {
    /// The message so far: `buf[..len]`. Written in place while this is
    /// the only handle, delivered as `Own(buf)[0..len]`: one copy per byte.
    buf: Arc<[u8]>,
    len: usize,
    last_frag: u8,
    /// False: throwing away the rest of an orphaned message.
    valid: bool,
    safe: bool,
}

impl Assembly {
    fn invalid(last_frag: u8) -> Assembly {
        Assembly {
            buf: zeroed(0),
            len: 0,
            last_frag,
            valid: false,
            safe: false,
        }
    }

    fn start(
        first: &[u8],
        hint: usize,
        max_len: usize,
        last_frag: u8,
        safe: bool,
        spare: &mut Spare,
    ) -> Assembly {
        // The sender's last message is the best guess of this one's size:
        // a stream of 1 MiB messages in 9000-byte frames, capped at 32
        // pieces, grew its buffer 3 times per message (zero-filled and
        // copied each time: 6 % of a profile). An oversized guess is
        // trimmed when the message is whole (`Assembly::finish`).
        let cap = hint
            .max(first.len().saturating_mul(2))
            .min(max_len)
            .max(first.len());
        let mut a = Assembly {
            buf: spare.take(cap).unwrap_or_else(|| zeroed(cap)),
            len: 0,
            last_frag,
            valid: true,
            safe,
        };
        a.push(first, max_len);
        a
    }

    /// The whole message's buffer (`[..len]` is the message): a guess much
    /// larger than the message is traded for a buffer of its size.
    /// The large buffer, free again, is offered to `spare`.
    fn finish(self, spare: &mut Spare) -> Arc<[u8]> {
        if self.buf.len() > OVERSIZE_MIN && self.buf.len() / OVERSIZE_FACTOR > self.len {
            // one pass, no zero fill
            let exact: Arc<[u8]> = Arc::from(&self.buf[..self.len]);
            spare.keep(&self.buf);
            return exact;
        }
        self.buf
    }

    /// Append `item` (the caller keeps `len + item.len() <= max_len`).
    fn push(&mut self, item: &[u8], max_len: usize) {
        let need = self.len + item.len();
        if need > self.buf.len() || Arc::get_mut(&mut self.buf).is_none() {
            let cap = need
                .max(self.buf.len().saturating_mul(2))
                .min(max_len.max(need));
            let mut grown = zeroed(cap);
            if let Some(g) = Arc::get_mut(&mut grown) {
                g[..self.len].copy_from_slice(&self.buf[..self.len]);
            }
            self.buf = grown;
        }
        if let Some(b) = Arc::get_mut(&mut self.buf) {
            b[self.len..need].copy_from_slice(item);
        }
        self.len = need;
    }
}

/// Buffers kept from at most this many delivered messages.
const SPARE_MAX: usize = 8;
/// Larger buffers are not kept (bounds what the spares hold).
const SPARE_BYTES_MAX: usize = 1 << 20;

/// Reassembly buffers of delivered messages, kept by reference: once every
/// handle has dropped its message (the buffer is ours alone again), the
/// next message of at most its size is written into it rather than into a
/// fresh zero-filled allocation (the fill was 6.8 % of a profile of 64 KiB
/// messages in 1500-byte frames; safe Rust cannot leave it out).
#[derive(Debug, Clone, Default)]
struct Spare {
    bufs: Vec<Arc<[u8]>>,
}

impl Spare {
    /// A buffer of at least `cap` (and at most 4 × `cap`) bytes that no one
    /// else holds any more.
    fn take(&mut self, cap: usize) -> Option<Arc<[u8]>> {
        let i = self.bufs.iter_mut().position(|b| {
            b.len() >= cap && b.len() / OVERSIZE_FACTOR <= cap && Arc::get_mut(b).is_some()
        })?;
        Some(self.bufs.swap_remove(i))
    }

    /// Keep a reference to the buffer of a message being delivered.
    fn keep(&mut self, buf: &Arc<[u8]>) {
        if buf.len() > SPARE_BYTES_MAX || buf.is_empty() {
            return;
        }
        if self.bufs.len() == SPARE_MAX {
            // the oldest is the likeliest to be free, but the newest
            // replaces one still held if any is
            let held = self
                .bufs
                .iter_mut()
                .position(|b| Arc::get_mut(b).is_none())
                .unwrap_or(0);
            self.bufs.swap_remove(held);
        }
        self.bufs.push(buf.clone());
    }
}

/// What the assemblies report while delivering a frame.
pub(crate) enum Assembled<F> {
    /// A whole message.
    Message {
        payload: Payload<F>,
        guarantee: Guarantee,
        reassembled: bool,
    },
    /// A piece that cannot be completed (its start was never delivered here).
    Orphan,
}

/// Per-sender reassembly of fragmented messages.
#[derive(Debug, Clone, Default)]
pub(crate) struct Assemblies {
    by_sender: BTreeMap<NodeId, Assembly>,
    max_len: usize,
    /// Length of each sender's last reassembled message (sizing hint).
    last_len: BTreeMap<NodeId, usize>,
    spare: Spare,
}

impl Assemblies {
    pub(crate) fn new(max_len: usize) -> Self {
        Assemblies {
            by_sender: BTreeMap::new(),
            max_len,
            last_len: BTreeMap::new(),
            spare: Spare::default(),
        }
    }

    /// Drop every partial message; returns how many.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.by_sender.values().filter(|a| a.valid).count();
        self.by_sender.clear();
        n
    }

    /// Deliver one frame's items in order. Returns Err on a payload that
    /// does not parse (the frame is skipped whole).
    pub(crate) fn on_frame<F: FrameBuf>(
        &mut self,
        sender: NodeId,
        frame: &FrameRef<F>,
        payload: Range<usize>,
        guarantee: Guarantee,
        out: &mut impl FnMut(Assembled<F>),
    ) -> Result<(), crate::wire::WireError> {
        let bytes = frame
            .contiguous()
            .and_then(|b| b.get(payload.clone()))
            .ok_or(crate::wire::WireError::LengthMismatch)?;
        let packed = Packed::parse(bytes)?;
        let count = packed.count();
        let PackHeader {
            fragmented,
            continuation,
        } = packed.header;
        if continuation == 0 {
            if let Some(old) = self.by_sender.remove(&sender) {
                if old.valid {
                    out(Assembled::Orphan);
                }
            }
        }
        for (i, (off, item)) in packed.items().enumerate() {
            let last = i + 1 == count;
            let continues = last && fragmented != 0;
            if i == 0 && continuation != 0 {
                let asm = self.by_sender.remove(&sender);
                match asm {
                    Some(mut a) if a.last_frag == continuation && a.valid => {
                        if a.len + item.len() > self.max_len {
                            out(Assembled::Orphan);
                            if continues {
                                self.by_sender.insert(sender, Assembly::invalid(fragmented));
                            }
                            continue;
                        }
                        a.push(item, self.max_len);
                        a.safe |= guarantee.is_safe();
                        if continues {
                            a.last_frag = fragmented;
                            self.by_sender.insert(sender, a);
                        } else {
                            let len = a.len;
                            self.last_len.insert(sender, len);
                            let g = if a.safe {
                                Guarantee::Safe
                            } else {
                                Guarantee::Agreed
                            };
                            let buf = a.finish(&mut self.spare);
                            self.spare.keep(&buf);
                            out(Assembled::Message {
                                payload: Payload {
                                    src: FrameRef::Own(buf),
                                    range: 0..len,
                                },
                                guarantee: g,
                                reassembled: true,
                            });
                        }
                    }
                    Some(a) if !a.valid && a.last_frag == continuation => {
                        if continues {
                            self.by_sender.insert(sender, Assembly::invalid(fragmented));
                        }
                    }
                    _ => {
                        out(Assembled::Orphan);
                        if continues {
                            self.by_sender.insert(sender, Assembly::invalid(fragmented));
                        }
                    }
                }
                continue;
            }
            if continues {
                if let Some(old) = self.by_sender.remove(&sender) {
                    if old.valid {
                        out(Assembled::Orphan);
                    }
                }
                let hint = self.last_len.get(&sender).copied().unwrap_or(0);
                self.by_sender.insert(
                    sender,
                    Assembly::start(
                        item,
                        hint,
                        self.max_len,
                        fragmented,
                        guarantee.is_safe(),
                        &mut self.spare,
                    ),
                );
                continue;
            }
            let start = payload.start + off;
            out(Assembled::Message {
                payload: Payload {
                    src: frame.clone(),
                    range: start..start + item.len(),
                },
                guarantee,
                reassembled: false,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::testing::TestBuf;

    #[test]
    fn a_spare_buffer_is_reused_only_once_nobody_holds_it() {
        let mut spare = Spare::default();
        let delivered: Arc<[u8]> = zeroed(4096);
        spare.keep(&delivered);
        // a handle still holds the message: never written again
        assert!(spare.take(1000).is_none());
        drop(delivered);
        // too small, or over four times the size asked for: left
        assert!(spare.take(5000).is_none());
        assert!(spare.take(1000).is_none());
        let b = spare.take(2000).expect("free and of a fitting size");
        assert_eq!(b.len(), 4096);
        assert!(spare.take(2000).is_none(), "handed out once");
        // bounded: the oldest free one makes room, large ones are not kept
        let held: Vec<Arc<[u8]>> = (0..SPARE_MAX + 3).map(|_| zeroed(64)).collect();
        for b in &held {
            spare.keep(b);
        }
        assert_eq!(spare.bufs.len(), SPARE_MAX);
        spare.keep(&zeroed(SPARE_BYTES_MAX + 1));
        assert!(spare.bufs.iter().all(|b| b.len() == 64));
    }

    #[test]
    fn a_reassembly_buffer_follows_the_last_message_and_is_trimmed_when_far_too_large() {
        let max = 4 << 20;
        let piece = [5u8; 9000];
        let mut spare = Spare::default();
        // the sender's last message was 1 MiB: one buffer of that size,
        // never grown while the pieces arrive
        let mut a = Assembly::start(&piece, 1 << 20, max, 1, false, &mut spare);
        assert_eq!(a.buf.len(), 1 << 20);
        for _ in 1..116 {
            a.push(&piece, max);
        }
        assert_eq!(a.buf.len(), 1 << 20, "not grown");
        a.push(&piece[..1_048_576 - 116 * 9000], max);
        let len = a.len;
        let whole = a.finish(&mut spare);
        assert_eq!((len, whole.len()), (1 << 20, 1 << 20));
        assert!(whole.iter().all(|b| *b == 5));
        // then a 20,000-byte message: a buffer of its own size, not 1 MiB
        let mut a = Assembly::start(&piece, 1 << 20, max, 1, false, &mut spare);
        a.push(&piece, max);
        a.push(&piece[..2000], max);
        let whole = a.finish(&mut spare);
        assert_eq!(whole.len(), 20_000);
        assert!(whole.iter().all(|b| *b == 5));
        // the 1 MiB buffer it was written in is free again, for the next
        assert!(spare.take(600_000).is_some_and(|b| b.len() == 1 << 20));
        // no guess: it grows from twice the first piece
        let mut a = Assembly::start(&piece, 0, max, 1, false, &mut spare);
        assert_eq!(a.buf.len(), 18_000);
        a.push(&piece, max);
        a.push(&piece, max);
        assert!(a.buf.len() >= 27_000);
        let whole = a.finish(&mut spare);
        assert_eq!(whole.len(), 36_000, "kept: within four times 27,000 B");
    }

    const CAP: usize = 1000;
    /// Payload bytes one frame carries besides its packing header.
    const PIECE: usize = CAP - PACK_HEADER_LEN - PACK_ITEM_OVERHEAD;
    const HEAD: &[u8] = b"cpg-header";

    /// A buffer that keeps its headers outside, `payload_len` bytes of
    /// payload at offset 3.
    fn shared(payload_len: usize) -> (TestBuf, Range<usize>) {
        let bytes: Vec<u8> = (0..payload_len + 5).map(|i| i as u8).collect();
        (TestBuf::Shared(Arc::from(bytes)), 3..3 + payload_len)
    }

    /// One planned frame of a message whose headers stay outside: its
    /// packing header, the bytes copied into the frame's headers, the
    /// buffer range read by reference, and the own item.
    struct Planned {
        header: PackHeader,
        prefix: Vec<u8>,
        range: Range<usize>,
        complete: bool,
    }

    fn plan_all(q: &mut SendQueue<TestBuf>, threshold: usize) -> Vec<Planned> {
        let mut frag = 0u8;
        let mut out = Vec::new();
        while let Some(plan) = q.take_frame(CAP, &mut frag, threshold) {
            let FramePlan::Piece { header, piece, own } = plan else {
                panic!("a message whose headers stay outside got a frame that is not a gather");
            };
            let (prefix, buf, range) = piece_parts(&own.src, piece.clone()).expect("parts");
            assert!(matches!(buf, TestBuf::Shared(_)));
            assert_eq!(prefix.len() + range.len(), piece.len());
            out.push(Planned {
                header,
                prefix: prefix.to_vec(),
                range,
                complete: own.complete,
            });
        }
        out
    }

    #[test]
    fn every_size_goes_out_by_reference_in_frames_of_its_own() {
        let sizes = [
            0,
            1,
            100,
            PIECE - HEAD.len() - 1,
            PIECE - HEAD.len(),
            PIECE - HEAD.len() + 1,
            3 * PIECE,
            3 * PIECE + 7,
        ];
        for len in sizes {
            let (buf, payload) = shared(len);
            let mut q = SendQueue::default();
            q.push_gather(Arc::from(HEAD), buf, payload.clone(), Guarantee::Safe);
            // far below the copy threshold still: never packed by copy
            let frames = plan_all(&mut q, usize::MAX);
            let expect = (HEAD.len() + len).div_ceil(PIECE).max(1);
            assert_eq!(frames.len(), expect, "size {len}");
            assert_eq!(frames[0].prefix, HEAD, "size {len}: CPG header first");
            assert!(frames[1..].iter().all(|f| f.prefix.is_empty()));
            // the buffer ranges tile the payload, in order
            let mut at = payload.start;
            for (k, f) in frames.iter().enumerate() {
                assert_eq!(f.range.start, at, "size {len} frame {k}");
                at = f.range.end;
                let last = k + 1 == frames.len();
                assert_eq!(f.complete, last);
                assert_eq!(f.header.fragmented != 0, !last);
                if k > 0 {
                    assert_eq!(f.header.continuation, frames[k - 1].header.fragmented);
                } else {
                    assert_eq!(f.header.continuation, 0);
                }
                assert!(f.prefix.len() + f.range.len() <= PIECE);
            }
            assert_eq!(at, payload.end, "size {len}");
            assert!(q.is_empty());
            assert_eq!(q.frames_estimate(CAP), 0);
            assert_eq!(q.bytes, 0);
        }
    }

    /// Small copied messages around it are packed among themselves, never
    /// with it, and the queue's estimate counts it as a frame of its own.
    #[test]
    fn never_packed_with_its_neighbours() {
        let mut q: SendQueue<TestBuf> = SendQueue::default();
        let small: Arc<[u8]> = Arc::from(&b"small"[..]);
        q.push(small.clone(), Guarantee::Agreed);
        let (buf, payload) = shared(1);
        q.push_gather(Arc::from(HEAD), buf, payload.clone(), Guarantee::Agreed);
        q.push(small.clone(), Guarantee::Agreed);
        q.push(small, Guarantee::Agreed);
        assert_eq!(q.frames_estimate(CAP), 2);
        let mut frag = 0;
        let threshold = 1024;
        let Some(FramePlan::Packed { pieces, .. }) = q.take_frame(CAP, &mut frag, threshold) else {
            panic!("the first small message is packed");
        };
        assert_eq!(pieces.len(), 1);
        let Some(FramePlan::Piece { piece, own, .. }) = q.take_frame(CAP, &mut frag, threshold)
        else {
            panic!("the shared buffer's message gets a frame of its own");
        };
        let (prefix, _, range) = piece_parts(&own.src, piece).expect("parts");
        assert_eq!((prefix, range), (HEAD, payload));
        assert_eq!(q.frames_estimate(CAP), 1);
        let Some(FramePlan::Packed { pieces, .. }) = q.take_frame(CAP, &mut frag, threshold) else {
            panic!("the two after it share a frame");
        };
        assert_eq!(pieces.len(), 2);
        assert!(q.take_frame(CAP, &mut frag, threshold).is_none());
    }

    /// A stream of small copied messages of any one size goes out in
    /// frames of exactly `cap` bytes but the last (a UDP GSO run needs one
    /// size), and the pieces put the messages back together.
    #[test]
    fn a_burst_of_small_messages_fills_every_frame_but_the_last() {
        for size in (1..=300).chain([PIECE - 1, PIECE, PIECE + 1, 2 * PIECE + 3]) {
            let mut q: SendQueue<TestBuf> = SendQueue::default();
            let msgs: Vec<Arc<[u8]>> = (0..3 * CAP / size + 5)
                .map(|k| Arc::from(alloc::vec![k as u8; size]))
                .collect();
            for m in &msgs {
                q.push(m.clone(), Guarantee::Agreed);
            }
            let mut frag = 0;
            let mut lens = Vec::new();
            let mut joined: Vec<u8> = Vec::new();
            while let Some(plan) = q.take_frame(CAP, &mut frag, usize::MAX) {
                let FramePlan::Packed { pieces, pad, .. } = plan else {
                    panic!("size {size}: copied messages are packed");
                };
                assert!(pad <= PACK_PAD_MAX, "size {size}");
                let items = pieces.iter().map(|(_, r)| r.len());
                lens.push(crate::wire::pack::packed_len(items) + pad);
                for (src, r) in &pieces {
                    joined.extend_from_slice(&src.contiguous().expect("copied")[r.clone()]);
                }
            }
            let (last, full) = lens.split_last().expect("frames");
            assert!(full.iter().all(|&l| l == CAP), "size {size}: {lens:?}");
            assert!(*last <= CAP, "size {size}");
            assert_eq!(joined, msgs.concat(), "size {size}");
        }
    }

    /// A message cut by a ring change starts over with its header.
    #[test]
    fn a_restarted_message_sends_its_header_again() {
        let (buf, payload) = shared(2 * PIECE);
        let mut q = SendQueue::default();
        q.push_gather(Arc::from(HEAD), buf, payload.clone(), Guarantee::Agreed);
        let mut frag = 0;
        assert!(q.take_frame(CAP, &mut frag, 0).is_some());
        assert!(q.restart_partial());
        let frames = plan_all(&mut q, 0);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].prefix, HEAD);
        assert_eq!(frames[0].range.start, payload.start);
        assert_eq!(frames[2].range.end, payload.end);
    }

    /// An `Rx` buffer (headers in its headroom) keeps its paths: in place
    /// when alone in a frame and unique, pieces after engine headers when
    /// shared, packed by copy below the threshold.
    #[test]
    fn headroom_buffers_keep_their_paths() {
        let mut bytes = alloc::vec![0u8; ZC_HEADROOM + 20];
        bytes[ZC_HEADROOM..].fill(7);
        let rx: Arc<[u8]> = Arc::from(bytes);
        let msg = ZC_HEADROOM..ZC_HEADROOM + 20;
        let mut frag = 0;
        let mut q = SendQueue::default();
        q.push_zc(TestBuf::Rx(rx.clone()), msg.clone(), Guarantee::Agreed);
        // `rx` is still held here: not unique, so a piece
        assert!(matches!(
            q.take_frame(CAP, &mut frag, 0),
            Some(FramePlan::Piece { .. })
        ));
        q.push_zc(TestBuf::Rx(rx.clone()), msg.clone(), Guarantee::Agreed);
        assert!(matches!(
            q.take_frame(CAP, &mut frag, 21),
            Some(FramePlan::Packed { .. })
        ));
        drop(rx);
        let mut bytes = alloc::vec![0u8; ZC_HEADROOM + 20];
        bytes[ZC_HEADROOM..].fill(7);
        q.push_zc(TestBuf::Rx(Arc::from(bytes)), msg, Guarantee::Agreed);
        assert!(matches!(
            q.take_frame(CAP, &mut frag, 0),
            Some(FramePlan::InPlace { .. })
        ));
    }
}
