//! The network the nodes live on, and what goes wrong with it: namespaces
//! on a bridge ([`Topology`]), iptables faults ([`Fault`]), the NFQUEUE
//! stage ([`Stage`]).

mod cmd;
pub mod rules;
mod stage;
mod topology;
mod udp;

pub use cmd::{exists, output_in, run, run_in};
pub use rules::Fault;
pub use stage::{Stage, StageParams, StageStats};
pub use topology::{cleanup_all, install_signal_cleanup, sweep_stale, Family, Topology};
