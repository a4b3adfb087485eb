//! Running the system's network tools (`ip`, `iptables`): one place that
//! turns a failed command into an error naming it and its stderr.

use std::process::{Command, Stdio};

/// Run `program args...`, waiting for it.
///
/// # Errors
/// The command line and what it printed on stderr, when it could not be
/// started or exited non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Run `program args...` inside network namespace `ns` (`ip netns exec`).
///
/// # Errors
/// As [`run`].
pub fn run_in(ns: &str, program: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Run `program args...` inside `ns` and return what it printed on stdout.
///
/// # Errors
/// As [`run`].
pub fn output_in(ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    let out = Command::new("ip")
        .args(&all)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            all.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether `program` can be found on `PATH` (or as an absolute path).
pub fn exists(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
