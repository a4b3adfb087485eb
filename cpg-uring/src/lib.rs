//! io_uring transport for one `cpg-core` engine (UDP unicast to every ring
//! member, registered buffers, multishot receive). Not built out yet: see
//! issue 3. The crate exists so the workspace layout is final.
#![deny(unsafe_op_in_unsafe_fn)]
