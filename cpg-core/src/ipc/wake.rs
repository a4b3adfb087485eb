//! The wake-up protocol: a sleeping side is woken through an eventfd only
//! when it said it is going to sleep, never once per message.
//!
//! Each ring header has two flag words ([`super::header::offset`]):
//! `consumer_sleeping` (set by the consumer before it sleeps on an empty
//! ring) and `producer_waiting` (set by the producer before it sleeps on a
//! full ring). The flag is the only thing that costs the other side a
//! syscall; while both sides are busy, no eventfd is touched.
//!
//! # The protocol (the std side implements it with these orderings)
//!
//! Producer, after writing one or more records:
//!
//! ```text
//! P1  head.store(new_head, Release)            // publish the records
//! P2  fence(SeqCst)
//! P3  if consumer_sleeping.load(Relaxed) != AWAKE
//!        && consumer_sleeping.swap(AWAKE, Relaxed) != AWAKE {
//!         write(consumer's eventfd, 1)
//!     }
//! ```
//!
//! Consumer, having found the ring empty and wishing to sleep:
//!
//! ```text
//! C1  consumer_sleeping.store(SLEEPING, Relaxed)
//! C2  fence(SeqCst)
//! C3  if head.load(Acquire) != tail {          // something arrived meanwhile
//!         consumer_sleeping.store(AWAKE, Relaxed); consume; return
//!     }
//! C4  poll(eventfd, socket); read(eventfd)     // resets the eventfd counter
//!     consumer_sleeping.store(AWAKE, Relaxed); consume
//! ```
//!
//! Reading is `head.load(Acquire)` (the record bytes written before the
//! producer's Release store are visible), then the records, then
//! `tail.store(new_tail, Release)` (the producer, loading the tail with
//! Acquire, reuses the bytes only after the consumer is done with them).
//!
//! Why the fences: P1 → P3 and C1 → C3 are each a store followed by a load
//! of another word, which every modern CPU may reorder (x86's store buffer
//! does). Without P2 and C2, the producer can read `AWAKE` while its head
//! is still in its store buffer, and the consumer can read the old head
//! while its `SLEEPING` is still in its own: it then sleeps with a record
//! published and no wake-up coming. With both fences, in the single total
//! order of SeqCst fences one comes first, and the side after it sees the
//! other's store: either the producer sees `SLEEPING` and signals, or the
//! consumer sees the new head and does not sleep. The tests below check
//! exactly this on a store-buffer model, both ways.
//!
//! The swap (not a store) in P3 makes the wake-up happen once per sleep
//! however many batches the producer publishes before the consumer runs.
//! A wake-up may be spurious (the consumer woke for another reason, or an
//! old signal is still counted): every waiter re-checks the indices.
//!
//! Waiting for room is the same protocol with the roles swapped: the
//! producer sets `producer_waiting`, fences, re-checks the tail (Acquire)
//! and sleeps; the consumer, after `tail.store(.., Release)`, fences,
//! checks `producer_waiting` and signals the producer's eventfd.
//!
//! Cost: one SeqCst fence per batch published or released (an `mfence`, or
//! a locked instruction, on x86; `dmb ish` on aarch64), never a syscall
//! while the other side is awake. Publish once per batch, not per record.
//!
//! # Which eventfd, and the doorbell
//!
//! A connection has two eventfds ([`super::setup::Welcome`]): the
//! daemon's, which the client signals (request ring data, event ring
//! room), and the client's, which the daemon signals (event ring data,
//! request ring room) and which the client's own threads sleep on while
//! they wait for a reply, for room, or (blocking dispatch) for an event.
//!
//! The fd an application polls (`cpg_fd_get`) is neither: it is the
//! connection's Unix socket, as Corosync's is (Pacemaker checks the
//! daemon's credentials on it with `SO_PEERCRED`). It is readable while
//! events are pending because the daemon writes one *doorbell* byte on it
//! when it publishes events while the client has armed the doorbell, and
//! the client reads the bytes back only when nothing is pending. The
//! `consumer_sleeping` word of the event ring carries two bits for this:
//!
//! | bit | set by the client | the daemon, publishing |
//! |---|---|---|
//! | [`SLEEPING`] | a thread of it is going to sleep on its eventfd | any record (an event or a reply): clear it, signal the eventfd |
//! | [`BELL`] | nothing is pending and the socket was drained: the application may be polling it | an event (`DELIVER`, `DELIVER_MORE`, `CONFCHG`, `TOTEM_CONFCHG`): clear it, write [`DOORBELL`] on the socket |
//!
//! Both are the protocol above with the eventfd (or the socket) as the
//! wake-up: the client arms `BELL` (C1), fences (C2) and looks at the
//! head again (C3); only then is the drained socket a promise that the
//! next event rings it. Replies never ring the doorbell, so a thread
//! waiting for its reply never makes the application's fd readable; the
//! client's threads clear and set their own bit only (`fetch_and`,
//! `fetch_or`), never the other.
//!
//! One case needs the daemon once more: events published between the
//! client's drain and its arming (C3 sees them, and the daemon, which
//! published before the bit was set, rang nothing). The client then writes
//! [`ECHO_REQUEST`] on the socket, and the daemon answers every byte it
//! reads there with one [`ECHO`] byte, so the socket turns readable for
//! events already read. A byte count per call bounds it (one answer per
//! byte read, at most a few bytes per visit): a client that floods the
//! socket costs the daemon what flooding its eventfd costs.
//!
//! # References
//! `docs/spec/ipc.md` "Wake-ups"; the Linux kernel's
//! `Documentation/memory-barriers.txt` ("SLEEP AND WAKE-UP FUNCTIONS": the
//! same store, barrier, load pairing); io_uring's `IORING_SQ_NEED_WAKEUP`
//! (a flag word instead of a syscall per submission).

/// A flag word's value while its side is running.
pub const AWAKE: u32 = 0;
/// `consumer_sleeping` bit: a consumer thread is (about to be) asleep on
/// its eventfd.
pub const SLEEPING: u32 = 1;
/// `consumer_sleeping` bit of the event ring: the client's socket is
/// drained and nothing is pending; write [`DOORBELL`] on it with the next
/// event (see "Which eventfd, and the doorbell").
pub const BELL: u32 = 2;
/// The byte the daemon writes on the socket for [`BELL`].
pub const DOORBELL: u8 = 1;
/// The byte the daemon writes on the socket for each byte it reads there.
pub const ECHO: u8 = 2;
/// The byte a client writes on the socket to have an [`ECHO`] back.
pub const ECHO_REQUEST: u8 = 3;
/// `producer_waiting` while the producer waits for room.
pub const WAITING: u32 = 1;

/// Whether a flag word read from shared memory asks for a wake-up. Any
/// value but [`AWAKE`] does: a corrupted word costs a spurious wake-up,
/// never a lost one.
pub const fn wants_wakeup(flag: u32) -> bool {
    flag != AWAKE
}

#[cfg(test)]
mod tests {
    //! A model of two threads on a machine with store buffers (x86-TSO):
    //! a store goes into its thread's FIFO buffer and reaches memory at
    //! some later step; a load sees its own buffer first; a fence or an
    //! atomic read-modify-write waits until its thread's buffer is empty.
    //! Every interleaving is explored.

    use std::collections::HashSet;

    use super::*;

    /// Records the producer publishes.
    const N: u8 = 2;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    enum Var {
        Head,
        Flag,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct State {
        head: u8,
        flag: u32,
        efd: u8,
        p_pc: u8,
        p_rec: u8,
        p_flag: u32,
        p_buf: Vec<(Var, u32)>,
        c_pc: u8,
        c_tail: u8,
        c_buf: Vec<(Var, u32)>,
    }

    fn load(mem: &State, buf: &[(Var, u32)], v: Var) -> u32 {
        if let Some(&(_, x)) = buf.iter().rev().find(|(w, _)| *w == v) {
            return x;
        }
        match v {
            Var::Head => u32::from(mem.head),
            Var::Flag => mem.flag,
        }
    }

    fn commit(s: &mut State, (v, x): (Var, u32)) {
        match v {
            Var::Head => s.head = x as u8,
            Var::Flag => s.flag = x,
        }
    }

    /// Every state one step after `s`.
    fn successors(s: &State, fences: bool) -> Vec<State> {
        let mut out = Vec::new();
        // Store buffers drain in order, one store per step.
        if !s.p_buf.is_empty() {
            let mut t = s.clone();
            let st = t.p_buf.remove(0);
            commit(&mut t, st);
            out.push(t);
        }
        if !s.c_buf.is_empty() {
            let mut t = s.clone();
            let st = t.c_buf.remove(0);
            commit(&mut t, st);
            out.push(t);
        }
        // Producer: P1 store head, P2 fence, P3 load flag, P4 swap + signal.
        let mut t = s.clone();
        let stepped = match s.p_pc {
            0 if s.p_rec < N => {
                t.p_rec += 1;
                t.p_buf.push((Var::Head, u32::from(t.p_rec)));
                t.p_pc = if fences { 1 } else { 2 };
                true
            }
            1 if s.p_buf.is_empty() => {
                t.p_pc = 2;
                true
            }
            2 => {
                t.p_flag = load(s, &s.p_buf, Var::Flag);
                t.p_pc = if wants_wakeup(t.p_flag) { 3 } else { 0 };
                true
            }
            3 if s.p_buf.is_empty() => {
                // swap(AWAKE): an atomic RMW on memory.
                if wants_wakeup(t.flag) {
                    t.efd = t.efd.saturating_add(1);
                }
                t.flag = AWAKE;
                t.p_pc = 0;
                true
            }
            _ => false,
        };
        if stepped {
            out.push(t);
        }
        // Consumer: C0 check head, C1 store SLEEPING, C2 fence, C3 re-check, C4 wait.
        let mut t = s.clone();
        let stepped = match s.c_pc {
            0 if s.c_tail < N => {
                let h = load(s, &s.c_buf, Var::Head) as u8;
                if h > s.c_tail {
                    t.c_tail = h;
                } else {
                    t.c_pc = 1;
                }
                true
            }
            1 => {
                t.c_buf.push((Var::Flag, SLEEPING));
                t.c_pc = if fences { 2 } else { 3 };
                true
            }
            2 if s.c_buf.is_empty() => {
                t.c_pc = 3;
                true
            }
            3 => {
                let h = load(s, &s.c_buf, Var::Head) as u8;
                if h > s.c_tail {
                    t.c_buf.push((Var::Flag, AWAKE));
                    t.c_pc = 0;
                } else {
                    t.c_pc = 4;
                }
                true
            }
            4 if s.efd > 0 => {
                t.efd = 0;
                t.c_buf.push((Var::Flag, AWAKE));
                t.c_pc = 0;
                true
            }
            _ => false,
        };
        if stepped {
            out.push(t);
        }
        out
    }

    /// A reachable state where the consumer sleeps for ever on a ring with
    /// records in it, if there is one.
    fn lost_wakeup(fences: bool) -> Option<State> {
        let start = State {
            head: 0,
            flag: AWAKE,
            efd: 0,
            p_pc: 0,
            p_rec: 0,
            p_flag: AWAKE,
            p_buf: Vec::new(),
            c_pc: 0,
            c_tail: 0,
            c_buf: Vec::new(),
        };
        let mut seen = HashSet::new();
        let mut todo = vec![start];
        while let Some(s) = todo.pop() {
            if !seen.insert(s.clone()) {
                continue;
            }
            let next = successors(&s, fences);
            if next.is_empty() && s.c_tail < N {
                return Some(s);
            }
            todo.extend(next);
        }
        assert!(seen.len() > 50, "the model explored {} states", seen.len());
        None
    }

    #[test]
    fn with_both_fences_no_wakeup_is_lost() {
        assert_eq!(lost_wakeup(true), None);
    }

    #[test]
    fn without_the_fences_a_wakeup_is_lost() {
        let s = lost_wakeup(false).expect("the store-buffer race");
        assert_eq!((s.c_pc, s.efd), (4, 0), "{s:?}");
        assert_eq!(s.head, N);
    }

    #[test]
    fn any_nonzero_flag_wakes() {
        assert!(!wants_wakeup(AWAKE));
        assert!(wants_wakeup(SLEEPING) && wants_wakeup(WAITING) && wants_wakeup(0xDEAD));
    }
}
