//! The daemon's stderr logger for the `log` facade (`cpg_std::logger`,
//! shared with cpgtool); the level from `--log-level` or `CPGD_LOG`
//! (`error`, `warn`, `info`, `debug`, `trace`).

pub use cpg_std::logger::{init, parse_level};
