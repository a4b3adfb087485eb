//! The `Cpg` handle API and the embedded `Node`. Not built out yet: see
//! issue 3. The crate exists so the workspace layout is final.
