//! Packing and fragmentation ("totempg"): the send queues that turn
//! application messages into frames at token time, and the per-sender
//! assemblies that turn delivered frames back into whole messages.
//!
//! Small messages share a frame; a message that does not fit is cut into
//! pieces over consecutive frames of its sender (`fragmented = k` on a frame
//! whose last item continues, `continuation = k` on the next). A message is
//! delivered whole or not at all: partial assemblies are dropped at every
//! regular configuration, and a sender re-sends from the start a message it
//! had only partly sent when its ring changed (totem.md §6.4 **[we]**).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Range;

use crate::engine::{FrameRef, Payload};
use crate::types::{Guarantee, NodeId};
use crate::wire::pack::{PackHeader, Packed, PACK_HEADER_LEN, PACK_ITEM_OVERHEAD};

/// Don't start a fragment in a frame with fewer free bytes than this.
const MIN_PIECE: usize = 64;

#[derive(Debug)]
struct OutMsg {
    data: Arc<[u8]>,
    guarantee: Guarantee,
    /// Bytes already placed in frames.
    offset: usize,
    /// Fragment number of the frame that carried the previous piece.
    frag: u8,
}

/// One frame's worth of items, ready to be emitted.
#[derive(Debug, Default)]
pub(crate) struct FramePlan {
    pub header: PackHeader,
    pub guarantee: Option<Guarantee>,
    pub items: Vec<(Arc<[u8]>, Range<usize>)>,
}

/// A FIFO of application messages waiting for the token.
#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    msgs: VecDeque<OutMsg>,
    /// Unsent bytes.
    bytes: usize,
}

impl SendQueue {
    pub(crate) fn push(&mut self, data: Arc<[u8]>, guarantee: Guarantee) {
        self.bytes += data.len();
        self.msgs.push_back(OutMsg { data, guarantee, offset: 0, frag: 0 });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Frames the queue still needs with `cap` payload bytes per frame (an
    /// upper bound: every message may start a frame of its own).
    pub(crate) fn frames_estimate(&self, cap: usize) -> usize {
        if self.msgs.is_empty() {
            0
        } else {
            (self.bytes + self.msgs.len() * PACK_ITEM_OVERHEAD).div_ceil(cap.max(1)).max(1)
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

    /// Fill one frame of `cap` payload bytes (packing header included).
    pub(crate) fn take_frame(&mut self, cap: usize, frag_counter: &mut u8) -> Option<FramePlan> {
        let mut plan = FramePlan::default();
        let mut used = PACK_HEADER_LEN;
        while let Some(head) = self.msgs.front_mut() {
            if used + PACK_ITEM_OVERHEAD >= cap {
                break;
            }
            let avail = (cap - used - PACK_ITEM_OVERHEAD).min(u16::MAX as usize);
            let remaining = head.data.len() - head.offset;
            if plan.items.is_empty() && head.offset > 0 {
                plan.header.continuation = head.frag;
            }
            let g = plan.guarantee.get_or_insert(head.guarantee);
            if head.guarantee.is_safe() {
                *g = Guarantee::Safe;
            }
            if remaining <= avail {
                plan.items.push((head.data.clone(), head.offset..head.data.len()));
                used += PACK_ITEM_OVERHEAD + remaining;
                self.bytes -= remaining;
                self.msgs.pop_front();
                continue;
            }
            if avail < MIN_PIECE && !plan.items.is_empty() {
                break;
            }
            *frag_counter = if *frag_counter == u8::MAX { 1 } else { *frag_counter + 1 };
            plan.items.push((head.data.clone(), head.offset..head.offset + avail));
            head.offset += avail;
            head.frag = *frag_counter;
            self.bytes -= avail;
            plan.header.fragmented = *frag_counter;
            break;
        }
        if plan.items.is_empty() {
            None
        } else {
            Some(plan)
        }
    }
}

#[derive(Debug)]
struct Assembly {
    buf: Vec<u8>,
    last_frag: u8,
    /// False: throwing away the rest of an orphaned message.
    valid: bool,
    safe: bool,
}

/// What the assemblies report while delivering a frame.
pub(crate) enum Assembled<F> {
    /// A whole message.
    Message { payload: Payload<F>, guarantee: Guarantee, reassembled: bool },
    /// A piece that cannot be completed (its start was never delivered here).
    Orphan,
}

/// Per-sender reassembly of fragmented messages.
#[derive(Debug, Default)]
pub(crate) struct Assemblies {
    by_sender: BTreeMap<NodeId, Assembly>,
    max_len: usize,
}

impl Assemblies {
    pub(crate) fn new(max_len: usize) -> Self {
        Assemblies { by_sender: BTreeMap::new(), max_len }
    }

    /// Drop every partial message; returns how many.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.by_sender.values().filter(|a| a.valid).count();
        self.by_sender.clear();
        n
    }

    /// Deliver one frame's items in order. Returns Err on a payload that
    /// does not parse (the frame is skipped whole).
    pub(crate) fn on_frame<F: Clone + AsRef<[u8]>>(
        &mut self,
        sender: NodeId,
        frame: &FrameRef<F>,
        payload: Range<usize>,
        guarantee: Guarantee,
        out: &mut impl FnMut(Assembled<F>),
    ) -> Result<(), crate::wire::WireError> {
        let bytes = frame.as_ref().get(payload.clone()).ok_or(crate::wire::WireError::LengthMismatch)?;
        let packed = Packed::parse(bytes)?;
        let count = packed.count();
        let PackHeader { fragmented, continuation } = packed.header;
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
                        if a.buf.len() + item.len() > self.max_len {
                            out(Assembled::Orphan);
                            if continues {
                                self.by_sender.insert(sender, Assembly { buf: Vec::new(), last_frag: fragmented, valid: false, safe: false });
                            }
                            continue;
                        }
                        a.buf.extend_from_slice(item);
                        a.safe |= guarantee.is_safe();
                        if continues {
                            a.last_frag = fragmented;
                            self.by_sender.insert(sender, a);
                        } else {
                            let len = a.buf.len();
                            let g = if a.safe { Guarantee::Safe } else { Guarantee::Agreed };
                            out(Assembled::Message {
                                payload: Payload { src: FrameRef::Own(Arc::from(a.buf)), range: 0..len },
                                guarantee: g,
                                reassembled: true,
                            });
                        }
                    }
                    Some(a) if !a.valid && a.last_frag == continuation => {
                        if continues {
                            self.by_sender.insert(sender, Assembly { buf: Vec::new(), last_frag: fragmented, valid: false, safe: false });
                        }
                    }
                    _ => {
                        out(Assembled::Orphan);
                        if continues {
                            self.by_sender.insert(sender, Assembly { buf: Vec::new(), last_frag: fragmented, valid: false, safe: false });
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
                let mut buf = Vec::new();
                buf.extend_from_slice(item);
                self.by_sender
                    .insert(sender, Assembly { buf, last_frag: fragmented, valid: true, safe: guarantee.is_safe() });
                continue;
            }
            let start = payload.start + off;
            out(Assembled::Message {
                payload: Payload { src: frame.clone(), range: start..start + item.len() },
                guarantee,
                reassembled: false,
            });
        }
        Ok(())
    }
}
