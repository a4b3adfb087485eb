//! Where the daemon's threads run (`ipc.cpu`, [`DaemonCpu`]): set on the
//! starting thread before the daemon spawns any, so every thread it
//! creates (the engine's, the IPC loop's, the signal thread) inherits the
//! one CPU, and with it `SCHED_BATCH`: on one CPU, a thread woken by the
//! other (a request for the engine, a delivery for the IPC loop) would
//! preempt it at once, a context switch per message; as batch threads
//! neither preempts the other on wake-up, so each finishes the batch in
//! hand first (Linux's SCHED_BATCH: no wake-up preemption, otherwise the
//! normal policy at nice 0). Measured with one cpgd and 3 libcpg clients
//! (`cpgload`, 3 s, alternated): 64 KiB 3,892-4,529 MB/s per member
//! against 2,157-3,216 without, 64 B 1,026k-1,093k msgs/s against
//! 924k-986k; one client's 64 B round trip p99 within the spread.

use cpg_std::config::DaemonCpu;
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

/// Keep the calling thread, and so every thread it starts afterwards, on
/// the CPU `cpu` names. `Ok(Some(n))`: placed on CPU `n`; `Ok(None)`: left
/// where it was (`Any`, or `Auto` on a process allowed a single CPU or
/// whose mask cannot be read).
///
/// # Errors
/// A fixed CPU the process may not use (outside its affinity mask or
/// cgroup), or the kernel's refusal, as a message naming the setting.
pub fn place(cpu: DaemonCpu, node_id: u32) -> Result<Option<usize>, String> {
    if cpu == DaemonCpu::Any {
        return Ok(None);
    }
    let allowed = match sched_getaffinity(None) {
        Ok(set) => set,
        // a host beyond the set's 1,024 CPUs: the default leaves the
        // threads where they are rather than stop the daemon
        Err(e) if cpu == DaemonCpu::Auto => {
            log::warn!(target: "cpgd", "ipc.cpu = \"auto\": sched_getaffinity: {e}; threads left where the kernel puts them");
            return Ok(None);
        }
        Err(e) => return Err(format!("ipc.cpu: sched_getaffinity: {e}")),
    };
    let usable = cpus_in(&allowed);
    let chosen = match cpu {
        DaemonCpu::Any => return Ok(None),
        DaemonCpu::Auto if usable.len() < 2 => return Ok(None),
        DaemonCpu::Auto => usable[(node_id.max(1) as usize - 1) % usable.len()],
        DaemonCpu::Fixed(n) => {
            let n = n as usize;
            if !usable.contains(&n) {
                return Err(format!(
                    "ipc.cpu = {n}: not a CPU this process may use ({usable:?})"
                ));
            }
            n
        }
    };
    let mut one = CpuSet::new();
    one.set(chosen);
    sched_setaffinity(None, &one).map_err(|e| format!("ipc.cpu = {chosen}: {e}"))?;
    if let Err(e) = batch() {
        log::warn!(target: "cpgd", "ipc.cpu: SCHED_BATCH: {e}; threads keep the normal policy");
    }
    Ok(Some(chosen))
}

/// The CPUs of `set`, ascending.
fn cpus_in(set: &CpuSet) -> Vec<usize> {
    (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect()
}

/// The calling thread (and the threads it starts afterwards) under
/// `SCHED_BATCH`, priority 0 (the only one the policy has).
fn batch() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler only reads `param`, an initialized
    // struct on this stack that outlives the call; pid 0 is the calling
    // thread, the only one changed. It touches no memory of ours.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The calling thread's scheduling policy (for the tests).
#[cfg(test)]
fn policy() -> i32 {
    // SAFETY: sched_getscheduler takes a pid (0: the calling thread) and
    // reads no memory of ours.
    unsafe { libc::sched_getscheduler(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `f` on a thread of its own: placing it must not pin the test
    /// harness's threads.
    fn on_a_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().unwrap()
    }

    fn allowed() -> Vec<usize> {
        cpus_in(&sched_getaffinity(None).unwrap())
    }

    #[test]
    fn auto_spreads_nodes_over_the_allowed_cpus_and_any_moves_nothing() {
        let usable = allowed();
        for node in 1..=3u32 {
            let (placed, now) = on_a_thread(move || {
                let placed = place(DaemonCpu::Auto, node).unwrap();
                (placed, sched_getaffinity(None).unwrap())
            });
            if usable.len() < 2 {
                assert_eq!(placed, None);
                continue;
            }
            let want = usable[(node as usize - 1) % usable.len()];
            assert_eq!(placed, Some(want));
            assert!(now.is_set(want));
            assert_eq!(now.count(), 1);
        }
        if usable.len() >= 2 {
            let (policy, child) = on_a_thread(|| {
                place(DaemonCpu::Auto, 1).unwrap();
                // a thread started afterwards inherits both
                let child =
                    std::thread::spawn(|| (policy(), sched_getaffinity(None).unwrap().count()))
                        .join()
                        .unwrap();
                (policy(), child)
            });
            assert_eq!(policy, libc::SCHED_BATCH);
            assert_eq!(child, (libc::SCHED_BATCH, 1));
        }
        let (placed, now, any_policy) = on_a_thread(|| {
            let placed = place(DaemonCpu::Any, 1).unwrap();
            (placed, sched_getaffinity(None).unwrap(), policy())
        });
        assert_eq!(placed, None);
        assert_eq!(any_policy, libc::SCHED_OTHER);
        assert_eq!(now.count() as usize, usable.len());
    }

    #[test]
    fn a_fixed_cpu_must_be_allowed() {
        let first = allowed()[0];
        let placed = on_a_thread(move || place(DaemonCpu::Fixed(first as u32), 1));
        assert_eq!(placed, Ok(Some(first)));
        let err = on_a_thread(|| place(DaemonCpu::Fixed(CpuSet::MAX_CPU as u32 + 1), 1));
        assert!(err.unwrap_err().contains("ipc.cpu"));
    }
}
