//! Routing: engine events to the handles that should see them (a
//! delivery to the group's listeners, a confchg to its local members and
//! their join state, a totem confchg to those that asked), then into their
//! mailboxes under one lock each; a handle whose mailbox would go over its
//! cap is evicted (its leave retried until the engine takes it).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use cpg_core::engine::{Event, FrameBuf, Payload, Request};
use cpg_core::{CsError, GroupName, Guarantee, Instant, MemberAddr, Reason};

use super::mailbox::{ConfChgData, MailEvent, EVENT_OVERHEAD};
use super::{lock, HState, HandleState, Locked};

/// `CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`: deliver one totem confchg
/// right after the handle's own join confchg.
pub const MODEL_V1_DELIVER_INITIAL_TOTEM_CONF: u32 = 0x01;

/// A handle that receives the group's messages: joined (or leaving after
/// its join was delivered) and not evicted.
fn listens<F>(s: &HandleState<F>, group: &GroupName) -> bool {
    !s.evicted
        && matches!(&s.group, Some((g, HState::Joined | HState::LeaveStarted { joined: true })) if g == group)
}

impl<F: FrameBuf + Send + Sync + 'static> Locked<F> {
    /// Drain every handle's staged messages into the engine (in order);
    /// false if some stay staged (engine queue full).
    pub(crate) fn drain(&mut self, now: Instant) -> bool {
        let Locked { engine, slots, .. } = self;
        let mut all = true;
        for s in slots.iter_mut().filter_map(|s| s.state.as_mut()) {
            all &= s.staging.drain(engine, Some(&mut s.inflight), now);
        }
        all
    }

    /// Refresh every handle's staging mirror (open, blocked, group).
    pub(crate) fn refresh_staging(&mut self) {
        let fc = self.engine.flow_control_enabled();
        let half = self.queue_cap / 2;
        let max = self.engine.config().max_message_size;
        let stopped = self.stopped;
        for s in self.slots.iter_mut().filter_map(|s| s.state.as_mut()) {
            s.refresh_staging(fc, half, max, stopped);
        }
    }

    /// Route every pending engine event to the handles, evict slow
    /// consumers, retry refused leaves.
    pub(crate) fn pump(&mut self, now: Instant) {
        loop {
            let mut any = false;
            while let Some(ev) = self.engine.poll_event() {
                any = true;
                self.route(ev);
            }
            if any {
                self.flush();
            }
            if !self.pending_leaves.is_empty() {
                let pending = std::mem::take(&mut self.pending_leaves);
                for (pid, group, staging) in pending {
                    // the handle's staged messages go before its leave
                    if !staging.drain(&mut self.engine, None, now) {
                        self.pending_leaves.push((pid, group, staging));
                        continue;
                    }
                    let r = self.engine.submit(
                        now,
                        Request::Leave {
                            pid,
                            group: &group,
                            reason: Reason::ProcDown,
                        },
                    );
                    if r == Err(CsError::TryAgain) {
                        self.pending_leaves.push((pid, group, staging));
                    } else {
                        any = true;
                    }
                }
            }
            if !any {
                break;
            }
        }
        self.oplog
            .on_stats(self.engine.stats(), self.engine.config());
        if !self.defer_kicks {
            self.dirty.kick();
        }
    }

    fn route(&mut self, ev: Event<F>) {
        let me = self.engine.node_id();
        match ev {
            Event::Deliver {
                group,
                sender,
                guarantee,
                payload,
            } => {
                // One pass over the handles; the payload is moved into the
                // last listener's queue and cloned only for the others (a
                // clone and a drop are atomic operations on a count the
                // dispatching threads share).
                let mut prev: Option<(usize, Arc<GroupName>)> = None;
                for i in 0..self.slots.len() {
                    let Some(s) = self.slots[i].state.as_ref() else {
                        continue;
                    };
                    if !listens(s, &group) {
                        continue;
                    }
                    // set with the group at join: the same name
                    let name = s.group_arc.clone().unwrap_or_else(|| Arc::clone(&group));
                    if let Some((j, name)) = prev.replace((i, name)) {
                        self.deliver_to(j, name, sender, guarantee, payload.clone());
                    }
                }
                if let Some((j, name)) = prev {
                    self.deliver_to(j, name, sender, guarantee, payload);
                }
            }
            Event::ConfChg {
                group,
                members,
                left,
                joined,
            } => {
                let data = Arc::new(ConfChgData {
                    group,
                    members,
                    left,
                    joined,
                });
                let totem = self.engine.groups().totem_conf();
                let totem = Arc::new((totem.0, totem.1.to_vec()));
                for i in 0..self.slots.len() {
                    let Some(s) = self.slots[i].state.as_mut() else {
                        continue;
                    };
                    if s.evicted {
                        continue;
                    }
                    let Some((g, st)) = s.group.as_mut() else {
                        continue;
                    };
                    if *g != data.group {
                        continue;
                    }
                    let mine = MemberAddr {
                        nodeid: me,
                        pid: s.pid,
                    };
                    let mut initial_totem = false;
                    let own_join = data
                        .joined
                        .iter()
                        .any(|(m, r)| *m == mine && *r == Reason::Join);
                    match st {
                        HState::JoinStarted | HState::LeaveStarted { joined: false } => {
                            // nothing of the group before the own join
                            if !own_join {
                                continue;
                            }
                            *st = match st {
                                HState::JoinStarted => HState::Joined,
                                _ => HState::LeaveStarted { joined: true },
                            };
                            initial_totem = s.flags & MODEL_V1_DELIVER_INITIAL_TOTEM_CONF != 0;
                        }
                        HState::Joined => {}
                        HState::LeaveStarted { joined: true } => {
                            if data.left.iter().any(|(m, _)| *m == mine) {
                                s.group = None;
                            }
                        }
                    }
                    self.push(i, MailEvent::ConfChg(data.clone()));
                    if initial_totem {
                        self.push(i, MailEvent::Totem(totem.clone()));
                    }
                }
            }
            Event::TotemConfChg { ring_id, members } => {
                let data = Arc::new((ring_id, members.to_vec()));
                for i in 0..self.slots.len() {
                    if matches!(&self.slots[i].state, Some(s) if s.wants_totem && !s.evicted) {
                        self.push(i, MailEvent::Totem(data.clone()));
                    }
                }
            }
            Event::Config(change) => self.oplog.on_config(&change),
            Event::FlowControl(_) | Event::Trace(_) => {}
        }
    }

    /// Queue a delivery on slot `i`; a handle's own message leaves its
    /// back-pressure count.
    fn deliver_to(
        &mut self,
        i: usize,
        group: Arc<GroupName>,
        sender: MemberAddr,
        guarantee: Guarantee,
        payload: Payload<F>,
    ) {
        let me = self.engine.node_id();
        if let Some(s) = self.slots[i].state.as_mut() {
            if sender.nodeid == me && s.pid == sender.pid {
                s.inflight = s
                    .inflight
                    .saturating_sub(EVENT_OVERHEAD + payload.range.len());
            }
        }
        self.push(
            i,
            MailEvent::Deliver {
                group,
                sender,
                guarantee,
                payload,
            },
        );
    }

    /// Queue an event on slot `i` (in its outbox until [`Locked::flush`]).
    fn push(&mut self, i: usize, ev: MailEvent<F>) {
        if let Some(s) = self.slots[i].state.as_mut() {
            if !s.evicted {
                s.outbox.push(ev);
            }
        }
    }

    /// Move every outbox into its mailbox; evict a handle whose queue goes
    /// over the cap (an empty queue always takes one event), at once and
    /// whatever the slow-consumer policy: nobody waits for it.
    fn flush(&mut self) {
        let cap = self.queue_cap;
        for i in 0..self.slots.len() {
            let Some(s) = self.slots[i].state.as_mut() else {
                continue;
            };
            if s.outbox.is_empty() {
                continue;
            }
            let fits = s.mail.push_many(&mut s.outbox, cap, &self.dirty);
            let peak = &mut self.stats.queue_peak_bytes;
            *peak = (*peak).max(s.mail.bytes());
            if !fits {
                self.evict(i, "its event queue reached handle_queue_bytes");
            }
        }
    }

    /// Evict the handle in slot `i`: its calls answer LIBRARY from now on,
    /// its queue is dropped, and its leave (PROCDOWN for the others) goes
    /// to the engine at the next pump (retried until taken).
    pub(crate) fn evict(&mut self, i: usize, why: &str) {
        let me = self.engine.node_id();
        let Some(s) = self.slots[i].state.as_mut() else {
            return;
        };
        if s.evicted {
            return;
        }
        super::oplog::evicted(s.pid, me, s.group.as_ref().map(|(g, _)| g), why);
        s.outbox.clear();
        s.evicted = true;
        s.stuck = None;
        s.gone.store(true, Ordering::Release);
        lock(&s.staging.st).open = false;
        s.mail.close();
        if let Some((g, HState::JoinStarted | HState::Joined)) = s.group.take() {
            self.pending_leaves.push((s.pid, g, s.staging.clone()));
        }
        self.stats.evictions += 1;
    }
}
