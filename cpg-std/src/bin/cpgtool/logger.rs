//! The `log` facade's lines on stderr for `cpgtool node` (a link down or
//! up, target `cpg::link`): one line per record, `[level] target: message`
//! as cpgd writes them; the level from `CPG_LOG` (`error`, `warn`, `info`,
//! `debug`, `trace`; default `info`). Stdout stays the JSON-lines protocol.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &Record<'_>) {
        if self.enabled(r.metadata()) {
            let tag = match r.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "notice",
                Level::Debug => "debug",
                Level::Trace => "trace",
            };
            eprintln!("[{tag}] {}: {}", r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

/// Install the logger (once; a logger already installed stays).
pub(crate) fn init() {
    let level = std::env::var("CPG_LOG")
        .ok()
        .and_then(|s| s.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::Info);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
