//! `Node`: one engine running on its own threads, the embedded default.
//! Handles ([`crate::Cpg`]) are opened on it.
//!
//! The transport is pluggable ([`Transport`], [`crate::transport`]): the
//! UDP transports carry frames between processes; the loopback network
//! carries them between nodes of one test process. This layer picks and
//! starts them.

use std::sync::Arc;

use cpg_core::NodeId;

use crate::config::NodeConfig;
pub use crate::error::StartError;
pub use crate::handles::ops::NodeStatus;
use crate::handles::ops::{DynNode, NodeControl};
use crate::handles::{NodeState, NodeStats};
use crate::state::RingSeqStore;
use crate::transport::loopback::LoopbackNet;
use crate::transport::{Running, Transport};

/// One engine on its transport's threads; open handles on it with
/// [`crate::Cpg::model_initialize`]. Dropping it stops it gracefully.
pub struct Node {
    node_id: NodeId,
    /// What handles opened on it call.
    node: Arc<dyn DynNode>,
    /// The same state, as the node's own controls.
    control: Arc<dyn NodeControl>,
    running: Option<Box<dyn Running>>,
    /// Ring, links and counters for `cpgtool status`.
    pub(crate) status_source: crate::status::StatusSource,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl Node {
    /// Start the node `config` describes on its configured transport
    /// (`transport`: io_uring, or plain UDP syscalls); the ring seq is loaded
    /// from (and persisted in) the state directory.
    ///
    /// # Errors
    /// Settings that do not work together ([`StartError::Config`]), state,
    /// engine or transport set-up failures.
    pub fn start(config: &NodeConfig) -> Result<Node, StartError> {
        // `netmtu = "auto"`: the kernel's path MTU, read once, before the
        // engine and the receive buffers are sized (config/netmtu.rs)
        let config = &config.with_path_mtu()?;
        // before any socket is bound (the handle layer checks it again)
        config.check_queue()?;
        Self::with_transport(
            config,
            crate::transport::uring::UringTransport::new(config)?,
        )
    }

    /// Start the node on `transport`.
    ///
    /// # Errors
    /// State, engine or transport set-up failures.
    pub(crate) fn with_transport<T: Transport>(
        config: &NodeConfig,
        transport: T,
    ) -> Result<Node, StartError> {
        let store = RingSeqStore::open(&config.state_dir, config.node_id)?;
        Self::with_transport_store(config, transport, Some(store))
    }

    pub(crate) fn with_transport_store<T: Transport>(
        config: &NodeConfig,
        transport: T,
        store: Option<RingSeqStore>,
    ) -> Result<Node, StartError> {
        let state = NodeState::<T::Frame>::new(config, store, transport.zc_allocator())?;
        let running = transport.spawn(state.clone())?;
        let status_source =
            crate::status::StatusSource::new(state.clone(), running.counters_handle(), config)
                .with_links(running.link_status_handle());
        Ok(Node {
            node_id: config.node_id,
            node: state.clone(),
            control: state,
            running: Some(running),
            status_source,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Totem state, ring id and members now.
    pub fn status(&self) -> NodeStatus {
        self.control.status()
    }

    /// Handle-layer counters.
    pub fn stats(&self) -> NodeStats {
        self.control.stats()
    }

    /// The transport's counters (the io_uring driver's), if it keeps any.
    pub fn transport_counters(&self) -> Option<cpg_uring::Snapshot> {
        self.running.as_ref().and_then(|r| r.counters())
    }

    /// Every (peer, link)'s status (up or down by its heartbeats, the last
    /// heartbeat's age and round trip, datagrams each way, times down), by
    /// peer then link; `None` on the in-process loopback transport.
    pub fn link_status(&self) -> Option<Vec<cpg_uring::LinkStatus>> {
        self.running.as_ref().and_then(|r| r.link_status())
    }

    /// The io_uring driver's handle for memory sent from in place, not
    /// owned by the node (cpgd's client regions: `cpg_uring::RxBuf::external`
    /// frames are sent from them; adding a region registers it as a fixed
    /// buffer when the kernel lets it). `None` on the in-process loopback
    /// transport. The handle stays valid after the node stops; it then
    /// refuses to add (`ExternalError::Closed`).
    #[doc(hidden)]
    pub fn external_regions(&self) -> Option<cpg_uring::ExternalRegions> {
        self.running.as_ref().and_then(|r| r.external_regions())
    }

    pub(crate) fn dyn_node(&self) -> Arc<dyn DynNode> {
        self.node.clone()
    }

    pub(crate) fn control(&self) -> &dyn NodeControl {
        &*self.control
    }

    /// The node's controls and its transport's freeze switch, apart from
    /// the node ([`crate::testing::probe`]).
    pub(crate) fn probe_parts(
        &self,
    ) -> (
        Arc<dyn NodeControl>,
        Option<Arc<crate::transport::Gate>>,
        Option<cpg_uring::LinkStatusHandle>,
    ) {
        let running = self.running.as_ref();
        (
            self.control.clone(),
            running.and_then(|r| r.gate()),
            running.and_then(|r| r.link_status_handle()),
        )
    }

    /// Stop gracefully: a LEAVE tells the others at once; open handles
    /// answer `LIBRARY` from now on.
    pub fn stop(mut self) {
        self.halt(true);
    }

    /// Stop abruptly, as if the process died: nothing is sent, the others
    /// find out by token loss (NODEDOWN).
    pub fn kill(mut self) {
        self.halt(false);
    }

    fn halt(&mut self, graceful: bool) {
        self.control.shutdown(graceful);
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.running.is_some() {
            self.halt(true);
        }
    }
}

/// The in-process test network's nodes (its transport is
/// [`crate::transport::loopback`]'s).
impl LoopbackNet {
    /// Start node `config.node_id` on this network (no state directory:
    /// the ring seq starts at 1).
    ///
    /// # Errors
    /// The engine refused the settings.
    pub fn start(&self, config: &NodeConfig) -> Result<Node, StartError> {
        Node::with_transport_store(config, self.transport(config), None)
    }

    /// Start nodes `1..=n` with fast timers, `tweak` applied to each config.
    ///
    /// # Errors
    /// As [`LoopbackNet::start`].
    pub fn cluster(
        &self,
        n: u32,
        tweak: impl Fn(&mut NodeConfig),
    ) -> Result<Vec<Node>, StartError> {
        let ids: Vec<NodeId> = (1..=n).collect();
        ids.iter()
            .map(|&id| {
                let mut c = NodeConfig::in_memory(id, &ids);
                tweak(&mut c);
                self.start(&c)
            })
            .collect()
    }
}
