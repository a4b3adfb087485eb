//! Persistent node state: the ring sequence number.
//!
//! A restarted node must never reuse a ring id (`docs/ARCHITECTURE.md` "Restart
//! identity"), so the engine reports every ring seq it enters
//! (`Engine::poll_persist`) and we make it durable before any later frame
//! is sent: write a temporary file, `fsync` it, rename it over the old one,
//! `fsync` the directory. At start the engine gets the stored value plus
//! one (1 when nothing is stored).
//!
//! File: `<state_dir>/ringseq-<nodeid>`, one decimal number and a newline.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use cpg_core::NodeId;

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An I/O error on a path.
    #[error("state {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file exists but does not hold a ring seq.
    #[error("state {path}: not a ring seq ({content:?}); remove the file only if this node's ring history may be forgotten")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What it held (first bytes).
        content: String,
    },
}

/// The ring seq file of one node.
#[derive(Debug, Clone)]
pub struct RingSeqStore {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
}

impl RingSeqStore {
    /// The store of node `nodeid` in `dir` (created if missing).
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn open(dir: &Path, nodeid: NodeId) -> Result<RingSeqStore, StateError> {
        fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(RingSeqStore {
            dir: dir.to_path_buf(),
            path: dir.join(format!("ringseq-{nodeid}")),
            tmp: dir.join(format!(".ringseq-{nodeid}.tmp")),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored ring seq, `None` if nothing was stored yet.
    ///
    /// # Errors
    /// Unreadable or corrupt file.
    pub fn load(&self) -> Result<Option<u64>, StateError> {
        match fs::read_to_string(&self.path) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| StateError::Corrupt {
                    path: self.path.clone(),
                    content: s.chars().take(40).collect(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// What the engine starts from: the stored seq + 1, or 1.
    ///
    /// # Errors
    /// As [`RingSeqStore::load`].
    pub fn initial_ring_seq(&self) -> Result<u64, StateError> {
        Ok(self.load()?.map_or(1, |s| s.saturating_add(1)))
    }

    /// Make `seq` durable (write, fsync, rename, fsync the directory).
    ///
    /// # Errors
    /// Any I/O error; the previous value is then still in place.
    pub fn store(&self, seq: u64) -> Result<(), StateError> {
        write_durably(&self.dir, &self.tmp, &self.path, &format!("{seq}\n")).map_err(|source| {
            StateError::Io {
                path: self.path.clone(),
                source,
            }
        })
    }
}

/// Replace `path` with `text` so that a crash leaves the old or the new
/// content, never a mix: write `tmp`, fsync it, rename it over `path`,
/// fsync `dir`.
///
/// # Errors
/// Any I/O error; the previous content is then still in place.
pub(crate) fn write_durably(dir: &Path, tmp: &Path, path: &Path, text: &str) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    fs::rename(tmp, path)?;
    File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cpg-std-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn absent_is_one_then_stored_plus_one() {
        let d = tmpdir("a");
        let s = RingSeqStore::open(&d, 3).unwrap();
        assert_eq!(s.load().unwrap(), None);
        assert_eq!(s.initial_ring_seq().unwrap(), 1);
        s.store(44).unwrap();
        assert_eq!(s.load().unwrap(), Some(44));
        let again = RingSeqStore::open(&d, 3).unwrap();
        assert_eq!(again.initial_ring_seq().unwrap(), 45);
        // another node in the same directory is independent
        assert_eq!(
            RingSeqStore::open(&d, 4)
                .unwrap()
                .initial_ring_seq()
                .unwrap(),
            1
        );
        assert!(!d.join(".ringseq-3.tmp").exists());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let d = tmpdir("c");
        let s = RingSeqStore::open(&d, 1).unwrap();
        fs::write(s.path(), "garbage").unwrap();
        let e = s.initial_ring_seq().unwrap_err().to_string();
        assert!(e.contains("not a ring seq"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }
}
