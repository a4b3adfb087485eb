//! The node processes and what they report: [`Cluster`] starts and drives
//! `cpgtool node` processes inside the namespaces, [`Log`] holds every line
//! they print, stamped.

mod log;
mod node;
mod procs;

pub use log::{Event, Log, Member, Record};
pub use node::NodeProc;
pub use procs::{Cluster, Load, GROUP, PORT};
