//! The user-space stage: what iptables cannot do (delay with jitter,
//! reordering, corruption) done to packets handed over by NFQUEUE.
//!
//! One thread per node namespace enters the namespace (`setns`), binds the
//! namespace's queue [`QUEUE`](super::rules::QUEUE) and holds each outgoing
//! datagram for `delay ± jitter`, a fraction of them for longer so later
//! ones overtake them (reordering), and issues the verdicts as their times
//! come; a fraction of control frames (every kind but MCAST) gets one byte
//! changed and its UDP checksum recomputed, a corruption the checksum does
//! not catch (issue 8's wedged ring came from one). MCAST payloads are left
//! alone: without frame authentication nothing can tell a changed payload
//! from a sent one, so that would test the authenticator, which does not
//! exist yet.
//!
//! Why the `nfq` crate: it speaks NFQUEUE over a raw netlink socket (no C
//! library, MIT/Apache-2.0), supports out-of-order verdicts and replacing
//! the payload in a verdict, and its Queue is `Send`; it was tried here
//! (iptables-nft, NFQUEUE `--queue-bypass` inside a namespace) before being
//! chosen. Packets still held when the stage stops are accepted at once.

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpg_core::wire::Kind;
use nfq::{Message, Queue, Verdict};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::rules::QUEUE;
use super::topology::Topology;
use super::udp;

/// What the stage does to each datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageParams {
    /// Base delay.
    pub delay_ms: u32,
    /// Uniform jitter added: 0..=jitter_ms.
    pub jitter_ms: u32,
    /// Percent of datagrams held `reorder_ms` longer.
    pub reorder_percent: u32,
    /// Extra hold of a reordered datagram.
    pub reorder_ms: u32,
    /// Percent of control datagrams corrupted (checksum kept valid).
    pub corrupt_percent: u32,
}

/// What the stage did, summed over the nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageStats {
    /// Datagrams seen.
    pub packets: u64,
    /// Held past their neighbours.
    pub reordered: u64,
    /// Corrupted.
    pub corrupted: u64,
}

/// A running stage, one thread per node namespace.
pub struct Stage {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<StageStats>>,
}

impl Stage {
    /// Start a stage thread in every node namespace; returns once each has
    /// bound its queue. Install [`Fault::Stage`](super::rules::Fault::Stage)
    /// after this, so no datagram waits for a stage that is not there yet.
    ///
    /// # Errors
    /// A namespace that could not be entered or a queue that could not be
    /// bound (the threads already started are stopped).
    pub fn start(topo: &Topology, params: StageParams, seed: u64) -> Result<Stage, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut stage = Stage {
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for i in 1..=topo.nodes() {
            let (tx, rx) = channel();
            let path = format!("/run/netns/{}", topo.ns(i));
            let stop = stop.clone();
            let rng = ChaCha8Rng::seed_from_u64(seed ^ u64::from(i).wrapping_mul(0x9e37_79b9));
            stage
                .threads
                .push(std::thread::spawn(move || match open_in(&path) {
                    Ok(q) => {
                        let _ = tx.send(Ok(()));
                        run(q, params, rng, &stop)
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("stage in {path}: {e}")));
                        StageStats::default()
                    }
                }));
            rx.recv()
                .map_err(|_| "stage thread died".to_string())
                .and_then(|r| r)?;
        }
        Ok(stage)
    }

    /// Release every held datagram and stop; what was done.
    pub fn stop(mut self) -> StageStats {
        self.stop_threads()
    }

    fn stop_threads(&mut self) -> StageStats {
        self.stop.store(true, Ordering::SeqCst);
        let mut sum = StageStats::default();
        for t in self.threads.drain(..) {
            if let Ok(s) = t.join() {
                sum.packets += s.packets;
                sum.reordered += s.reordered;
                sum.corrupted += s.corrupted;
            }
        }
        sum
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// Enter the namespace at `path` (this thread only) and bind its queue.
fn open_in(path: &str) -> std::io::Result<Queue> {
    let ns = File::open(path)?;
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )?;
    let mut q = Queue::open()?;
    q.bind(QUEUE)?;
    q.set_fail_open(QUEUE, true)?;
    q.set_nonblocking(true);
    Ok(q)
}

fn run(mut q: Queue, p: StageParams, mut rng: ChaCha8Rng, stop: &AtomicBool) -> StageStats {
    let mut stats = StageStats::default();
    let mut held: Vec<(Instant, Message)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        loop {
            let mut msg = match q.recv() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            };
            stats.packets += 1;
            if p.corrupt_percent > 0 && rng.gen_range(0..100) < p.corrupt_percent {
                let mut bytes = msg.get_payload().to_vec();
                if corrupt_control(&mut bytes, &mut rng) {
                    msg.set_payload(bytes);
                    stats.corrupted += 1;
                }
            }
            let mut hold = p.delay_ms + rng.gen_range(0..=p.jitter_ms);
            if p.reorder_percent > 0 && rng.gen_range(0..100) < p.reorder_percent {
                hold += p.reorder_ms;
                stats.reordered += 1;
            }
            msg.set_verdict(Verdict::Accept);
            held.push((Instant::now() + Duration::from_millis(u64::from(hold)), msg));
        }
        let now = Instant::now();
        let mut i = 0;
        while i < held.len() {
            if held[i].0 <= now {
                let (_, m) = held.swap_remove(i);
                let _ = q.verdict(m);
            } else {
                i += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for (_, m) in held {
        let _ = q.verdict(m);
    }
    let _ = q.unbind(QUEUE);
    stats
}

/// Change one byte of a control frame (not MCAST) in the IPv4 datagram
/// `pkt` and recompute its UDP checksum; `false` for anything else.
pub fn corrupt_control(pkt: &mut [u8], rng: &mut impl Rng) -> bool {
    let Some(r) = udp::payload_range(pkt) else {
        return false;
    };
    let frame = &pkt[r.clone()];
    match frame.get(3).and_then(|&k| Kind::from_u8(k)) {
        Some(Kind::Mcast) | None => return false,
        Some(_) => {}
    }
    let at = r.start + rng.gen_range(0..r.len());
    pkt[at] ^= rng.gen_range(1..=255u8);
    udp::fix_checksum(pkt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(kind: u8) -> Vec<u8> {
        let body = [0xc7, 0xc9, 2, kind, 0, 0, 0, 0, 1, 0, 0, 0];
        let total = 28 + body.len();
        let mut p = vec![
            0x45,
            0,
            0,
            total as u8,
            0,
            1,
            0x40,
            0,
            64,
            17,
            0,
            0,
            10,
            77,
            0,
            1,
            10,
            77,
            0,
            2,
            0x15,
            0x1d,
            0x15,
            0x1d,
            0,
            (8 + body.len()) as u8,
            0,
            0,
        ];
        p.extend_from_slice(&body);
        assert!(udp::fix_checksum(&mut p));
        p
    }

    #[test]
    fn corrupts_control_frames_only_and_keeps_the_checksum_valid() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let token = datagram(Kind::Token as u8);
        let mut t = token.clone();
        assert!(corrupt_control(&mut t, &mut rng));
        let diff: Vec<usize> = (0..t.len()).filter(|&i| t[i] != token[i]).collect();
        // one payload byte, plus the checksum bytes that follow from it
        assert!(diff.iter().filter(|&&i| i >= 28).count() == 1, "{diff:?}");
        assert!(diff.iter().all(|&i| i >= 28 || i == 26 || i == 27));
        let mut check = t.clone();
        check[26] = 0;
        check[27] = 0;
        assert!(udp::fix_checksum(&mut check));
        assert_eq!(check, t, "the stored checksum is the right one");
        let mcast = datagram(Kind::Mcast as u8);
        let mut m = mcast.clone();
        assert!(!corrupt_control(&mut m, &mut rng));
        assert_eq!(m, mcast);
    }
}
