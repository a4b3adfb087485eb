//! The handle tests of `cpg-std/tests/handles.rs`, the same cases
//! (`cpg-std/tests/handles/cases.rs`), on `cpgd`: `n` daemons in this
//! process, one node each on loopback UDP (io_uring), and every handle a
//! connection to one of them (`Cpg::connect`). The API must behave as on
//! an embedded node: the same codes, the same events in the same order.

#[path = "../../cpg-std/tests/common/mod.rs"]
mod common;
#[path = "common/mod.rs"]
mod daemon;
#[macro_use]
#[path = "../../cpg-std/tests/handles/cases.rs"]
mod cases;

use std::path::PathBuf;

use cases::Cluster;
use cpg_std::testing::NodeProbe;
use cpg_std::{Callbacks, Context, Cpg, CsError, ModelV1, NodeConfig};
use cpgd::{Daemon, StopMode};

/// Daemons for nodes `1..=n` in a temp dir, each serving its own socket.
struct Daemons {
    dir: PathBuf,
    daemons: Vec<Option<Daemon>>,
    sockets: Vec<PathBuf>,
    probes: Vec<NodeProbe>,
    /// Node 1's request and event rings, in bytes.
    ring_bytes: usize,
}

impl Daemons {
    fn socket(&self, i: usize) -> &std::path::Path {
        &self.sockets[i]
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for d in self.daemons.iter_mut().filter_map(Option::take) {
            d.stop(StopMode::Graceful);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One line of `/proc/self/maps`: a mapping's address range, its offset
/// in the file, and the file (device and inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    offset: usize,
    file: (u64, u64),
}

fn mappings() -> Vec<Mapping> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (range, _perms, offset, dev, inode) =
                (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            let (start, end) = range.split_once('-')?;
            let (major, minor) = dev.split_once(':')?;
            let inode: u64 = inode.parse().ok()?;
            if inode == 0 {
                return None;
            }
            let dev = (u64::from_str_radix(major, 16).ok()? << 32)
                | u64::from_str_radix(minor, 16).ok()?;
            Some(Mapping {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
                offset: usize::from_str_radix(offset, 16).ok()?,
                file: (dev, inode),
            })
        })
        .collect()
}

impl Cluster for Daemons {
    const REUSES_HANDLE_SLOTS: bool = false;

    fn start(n: u32, tweak: &dyn Fn(&mut NodeConfig)) -> Daemons {
        let dir = daemon::temp_dir("handles");
        let mut file = daemon::cluster_file(&dir, n);
        // fast, but robust on a loaded 2-core machine
        file.totem.token_ms = Some(1000);
        let mut d = Daemons {
            dir,
            daemons: Vec::new(),
            sockets: Vec::new(),
            probes: Vec::new(),
            ring_bytes: 0,
        };
        for id in 1..=n {
            let mut c = daemon::node_config(&file, &d.dir, id);
            tweak(&mut c);
            if id == 1 {
                d.ring_bytes = c.ipc.request_ring_bytes + c.ipc.event_ring_bytes;
            }
            let daemon = Daemon::start(&c).expect("cpgd starts");
            d.sockets.push(daemon.socket().to_path_buf());
            d.probes.push(daemon.node_probe().clone());
            d.daemons.push(Some(daemon));
        }
        assert!(cases::converged(&d.probes), "ring did not form");
        d
    }

    fn open_model(
        &self,
        i: usize,
        _pid: u32,
        model: ModelV1,
        context: Context,
    ) -> Result<Cpg, CsError> {
        Cpg::connect(Some(self.socket(i)), model, context)
    }

    fn open_legacy(&self, i: usize, callbacks: Callbacks) -> Result<Cpg, CsError> {
        Cpg::connect(Some(self.socket(i)), callbacks.into(), None)
    }

    fn pid(&self, _pid: u32) -> u32 {
        std::process::id()
    }

    fn stop(&mut self, i: usize) {
        self.daemons[i]
            .take()
            .expect("daemon running")
            .stop(StopMode::Graceful);
    }

    fn kill(&mut self, i: usize) {
        self.daemons[i]
            .take()
            .expect("daemon running")
            .stop(StopMode::Abrupt);
    }

    fn probe(&self, i: usize) -> NodeProbe {
        self.probes[i].clone()
    }

    /// The client and the daemon map the connection's memfd each (both in
    /// this process): the daemon's address of a client slot's byte is at
    /// the same offset of the file in the other mapping of it. A buffer
    /// below the copy threshold is on the client's heap (no file): the
    /// daemon never sees it.
    fn sent_from(&self, _i: usize, addr: usize) -> usize {
        let maps = mappings();
        let Some(client) = maps.iter().find(|m| m.start <= addr && addr < m.end) else {
            return addr;
        };
        let at = addr - client.start + client.offset;
        let others: Vec<&Mapping> = maps
            .iter()
            .filter(|m| {
                m.file == client.file
                    && m.start != client.start
                    && m.offset <= at
                    && at < m.offset + (m.end - m.start)
            })
            .collect();
        assert_eq!(
            others.len(),
            1,
            "one daemon mapping of {client:?}: {others:?}"
        );
        others[0].start + (at - others[0].offset)
    }

    fn ring_bytes(&self) -> usize {
        self.ring_bytes
    }
}

handle_cases!(Daemons);

/// A handle of this process connected to the cpgd at `socket`, joined to
/// `group` (its own confchg read).
fn joined(socket: &std::path::Path, group: &str) -> common::H {
    let rec = common::Rec::default();
    let cpg = Cpg::connect(Some(socket), rec.model(false, 0), None).expect("initialize");
    let h = common::H {
        cpg,
        rec,
        pid: std::process::id(),
    };
    let g = common::group(group);
    h.cpg.join(&g).unwrap();
    assert!(h.wait_joined(&g));
    h
}

/// On a daemon alone on its ring, a sender that has dispatched everything
/// finds its own delivery readable on the handle's fd when
/// `mcast_joined` returns (the daemon's thread carries the token,
/// `cpg-std/src/handles/solo.rs`, and the send waits briefly for the
/// delivery and its doorbell byte, `cpg-std/src/client/echo.rs`), so an
/// application polling next does not sleep. Without the wait the send
/// returns before the daemon has even read the request.
#[test]
fn a_lone_daemon_s_sender_finds_its_delivery_readable_when_the_send_returns() {
    use rustix::event::{PollFd, PollFlags, Timespec};
    use std::io::IoSlice;
    let c = Daemons::start(1, &|_| {});
    let h = joined(c.socket(0), "echo");
    let sends = 300;
    let mut readable = 0;
    for k in 0..sends {
        let m = (k as u32).to_le_bytes();
        h.cpg
            .mcast_joined(cpg_std::Guarantee::Agreed, &[IoSlice::new(&m)])
            .unwrap();
        let mut fds = [PollFd::new(&h.cpg, PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if rustix::event::poll(&mut fds, Some(&zero)).unwrap_or(0) > 0 {
            readable += 1;
        }
        assert!(h.wait_msgs(k + 1), "message {k} not delivered");
    }
    let msgs = h.rec.msgs();
    for (k, m) in msgs.iter().enumerate() {
        assert_eq!(m[..], (k as u32).to_le_bytes(), "order");
    }
    eprintln!("readable when the send returned: {readable} of {sends}");
    // the wait turns itself off for a while after waits that read nothing
    // (a preempted daemon on a loaded machine): a quarter is far above
    // what a send that does not wait sees
    assert!(readable >= sends / 4, "{readable} of {sends}");
}

/// A copying send of 32 KiB up to 512 KiB goes through a zero-copy slot of
/// the connection allocated ahead when its group has several members on
/// this node (`cpg-std/src/client/send.rs`, `docs/spec/ipc.md` §9): the
/// library copies it into the slot and the daemon copies nothing, where
/// the ring path had the daemon copy it out of the request ring. Smaller
/// and larger ones, and every one of a group's only local member, still
/// go through the ring. Every message arrives whole, in order, at both.
#[test]
fn a_large_copying_send_goes_through_a_slot_and_the_daemon_copies_nothing() {
    use std::io::IoSlice;
    let c = Daemons::start(1, &|_| {});
    let h = joined(c.socket(0), "via-slot");
    let send = |k: usize, msg: &[u8]| {
        // two iovecs, cut off the middle: the slot gets both parts in order
        let (a, b) = msg.split_at(msg.len() / 3);
        loop {
            match h.cpg.mcast_joined(
                cpg_std::Guarantee::Agreed,
                &[IoSlice::new(a), IoSlice::new(b)],
            ) {
                Ok(()) => break,
                Err(CsError::TryAgain) => std::thread::sleep(std::time::Duration::from_millis(1)),
                Err(e) => panic!("message {k}: {e:?}"),
            }
        }
    };
    let stats = || c.daemons[0].as_ref().expect("running").stats();
    // the group's only member here: through the ring
    let alone: Vec<u8> = (0..64 << 10).map(|i| (i * 3) as u8).collect();
    send(0, &alone);
    assert!(h.wait_msgs(1));
    assert_eq!(stats().zc_mcasts, 0, "{:?}", stats());
    // a second member on this node: another process (one process joins
    // a group once), dispatching until its stdin ends
    let mut other = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_joins_and_dispatches", "--nocapture"])
        .env("CPGD_TEST_CHILD_JOIN_SOCKET", c.socket(0))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let hold = other.stdin.take();
    assert!(h.wait(|evs| evs
        .iter()
        .filter(|e| matches!(e, common::Ev::Conf { .. }))
        .count()
        >= 2));
    let sizes: Vec<usize> = (0..24)
        .map(|k| match k % 3 {
            0 => 64 << 10,
            1 => 100 + k,
            _ => (32 << 10) + k, // the smallest that takes a slot, and more
        })
        .chain([600 << 10]) // above the slot range
        .collect();
    let mut sent = vec![alone];
    for (k, &len) in sizes.iter().enumerate() {
        let msg: Vec<u8> = (0..len).map(|i| (i * 7 + k) as u8).collect();
        send(k + 1, &msg);
        sent.push(msg);
        // dispatched (the child dispatches as they come): nothing held
        // in the sender's delivery ring at the next send
        assert!(h.wait_msgs(sent.len()), "message {k} not delivered");
    }
    drop(hold);
    assert!(other.wait().unwrap().success(), "the other member");
    let got = h.rec.msgs();
    assert_eq!(got.len(), sent.len());
    for (k, (m, s)) in got.iter().zip(&sent).enumerate() {
        assert!(m == s, "message {k} ({} B) differs", s.len());
    }
    let in_range = |l: &usize| (32 << 10..512 << 10).contains(l);
    let slotted = sizes.iter().filter(|l| in_range(l)).count() as u64;
    let copied: usize = sizes.iter().filter(|l| !in_range(l)).sum::<usize>() + (64 << 10);
    let s = stats();
    assert_eq!(s.zc_mcasts, slotted, "{s:?}");
    assert_eq!(s.request_bytes_copied, copied as u64, "{s:?}");
}

/// Run as a child process by
/// `a_large_copying_send_goes_through_a_slot_and_the_daemon_copies_nothing`:
/// a second member of its group on the same daemon, dispatching until its
/// stdin ends.
#[test]
fn child_joins_and_dispatches() {
    let Ok(path) = std::env::var("CPGD_TEST_CHILD_JOIN_SOCKET") else {
        return;
    };
    let h = joined(std::path::Path::new(&path), "via-slot");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        d.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = h.cpg.dispatch(cpg_std::DispatchFlags::All);
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}
