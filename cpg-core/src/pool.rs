//! Zero-copy buffer bookkeeping (being built; see the pool helper).
