//! Benchmarks live in `benches/benches/` (criterion).
