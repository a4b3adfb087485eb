//! Arbitrary text into the configuration path a node takes at start:
//! `ConfigFile::parse` (TOML) then `ConfigFile::validate`. Both must answer
//! a typed `ConfigError` for anything they refuse, never panic. Whatever
//! parses must survive the writer (`to_toml`, what `cpgtool demo` writes)
//! unchanged, and whatever validates must name a node of its own node list.
#![no_main]

use cpg_std::ConfigFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `ConfigFile::load` refuses non-UTF-8 files before the parser runs.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = ConfigFile::parse(text, "fuzz.toml") else {
        return;
    };
    let written = file.to_toml();
    match ConfigFile::parse(&written, "written.toml") {
        Ok(again) => assert_eq!(again, file, "to_toml changed the file:\n{written}"),
        Err(e) => panic!("to_toml wrote a file the parser refuses: {e}\n{written}"),
    }
    // The node's own id comes from the file or the command line: try both,
    // and an id from the list (the only way past the node list checks).
    let listed = file.nodelist.first().map(|n| n.nodeid);
    for nodeid in [None, listed] {
        if let Ok(config) = file.validate(nodeid) {
            assert!(config.nodes.iter().any(|&(n, _)| n == config.node_id));
            assert_eq!(config.engine.validate(), Ok(()));
            let _ = config.addr();
        }
    }
});
