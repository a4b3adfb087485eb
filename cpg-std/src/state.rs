//! Persistent node state: the ring sequence number.
//!
//! A restarted node must never reuse a ring id (`docs/ARCHITECTURE.md` "Restart
//! identity"), so the engine reports every ring seq it enters
//! (`Engine::poll_persist`) and we make it durable before any later frame
//! is sent: write a temporary file, `fsync` it, rename it over the old one,
//! `fsync` the directory. At start the engine gets the stored value plus
//! one (1 when nothing is stored).
//!
//! The stored seq never goes down: [`RingSeqStore::store`] leaves a higher
//! value on disk in place. A stored seq at or above the engine's
//! [`RING_SEQ_MAX`] leaves no room for the next ring and is refused at
//! start, as is a file that does not hold a ring seq; neither is read
//! beyond a few bytes nor quoted beyond a short excerpt.
//!
//! File: `<state_dir>/ringseq-<nodeid>`, one decimal number and a newline.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cpg_core::limits::RING_SEQ_MAX;
use cpg_core::NodeId;

use crate::config::excerpt;

/// Most bytes read from a ring seq file: a u64, surrounding white space
/// and room to spare. A longer file is corrupt.
const FILE_BYTES_MAX: u64 = 64;

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
    #[error("state {path}: not a ring seq (\"{content}\"); remove the file only if this node's ring history may be forgotten")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// An excerpt of what it held.
        content: String,
    },
    /// The stored seq leaves no room for another ring: no honest node gets
    /// there (2^60 rings), so the file is damaged or forged.
    #[error("state {path}: ring seq {seq} is at or above the engine's maximum ring seq {RING_SEQ_MAX}, so no ring could follow it; the file is damaged: remove it only if this node's ring history may be forgotten")]
    BeyondMax {
        /// The file.
        path: PathBuf,
        /// The seq it holds.
        seq: u64,
    },
    /// An empty state directory (it would be the working directory).
    #[error("state directory is empty: give the directory of the ring seq file")]
    EmptyDir,
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
    /// [`StateError::EmptyDir`], or the directory cannot be created.
    pub fn open(dir: &Path, nodeid: NodeId) -> Result<RingSeqStore, StateError> {
        if dir.as_os_str().is_empty() {
            return Err(StateError::EmptyDir);
        }
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
    /// Unreadable or corrupt file ([`StateError::Corrupt`]), or a seq the
    /// engine could not grow from ([`StateError::BeyondMax`]).
    pub fn load(&self) -> Result<Option<u64>, StateError> {
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let mut bytes = Vec::new();
        file.take(FILE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let seq = std::str::from_utf8(&bytes)
            .ok()
            .filter(|_| bytes.len() as u64 <= FILE_BYTES_MAX)
            .and_then(|text| text.trim().parse::<u64>().ok());
        match seq {
            None => Err(StateError::Corrupt {
                path: self.path.clone(),
                content: excerpt(&String::from_utf8_lossy(&bytes)),
            }),
            Some(seq) if seq >= RING_SEQ_MAX => Err(StateError::BeyondMax {
                path: self.path.clone(),
                seq,
            }),
            Some(seq) => Ok(Some(seq)),
        }
    }

    /// What the engine starts from: the stored seq + 1, or 1.
    ///
    /// # Errors
    /// As [`RingSeqStore::load`].
    pub fn initial_ring_seq(&self) -> Result<u64, StateError> {
        Ok(self.load()?.map_or(1, |s| s.saturating_add(1)))
    }

    /// Make `seq` durable (write, fsync, rename, fsync the directory),
    /// unless the file already holds `seq` or more: the stored seq never
    /// goes down, whoever wrote the higher one (another store of the same
    /// file, a report that arrived late).
    ///
    /// # Errors
    /// Any I/O error, or the file on disk is unreadable or corrupt
    /// (as [`RingSeqStore::load`]); the previous value is then still in place.
    pub fn store(&self, seq: u64) -> Result<(), StateError> {
        if self.load()?.is_some_and(|stored| stored >= seq) {
            return Ok(());
        }
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
    use cpg_core::limits::RING_SEQ_MAX;

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
    #[test]
    fn ring_seq_beyond_the_engines_maximum_is_refused() {
        // Security issue "Config and tool edges": a file holding u64::MAX
        // was accepted and the next start's seq saturated (or wrapped).
        let d = tmpdir("max");
        let s = RingSeqStore::open(&d, 1).unwrap();
        for seq in [u64::MAX, RING_SEQ_MAX + 1, RING_SEQ_MAX] {
            fs::write(s.path(), format!("{seq}\n")).unwrap();
            let e = s.initial_ring_seq().unwrap_err().to_string();
            assert!(
                e.contains(&s.path().display().to_string())
                    && e.contains(&seq.to_string())
                    && e.contains(&RING_SEQ_MAX.to_string()),
                "{seq}: {e}"
            );
        }
        // the largest stored seq a start can grow from
        fs::write(s.path(), format!("{}\n", RING_SEQ_MAX - 1)).unwrap();
        assert_eq!(s.initial_ring_seq().unwrap(), RING_SEQ_MAX);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn persisted_ring_seq_never_goes_down() {
        let d = tmpdir("down");
        let s = RingSeqStore::open(&d, 2).unwrap();
        let other = RingSeqStore::open(&d, 2).unwrap(); // a second store of the same file
        s.store(50).unwrap();
        s.store(40).unwrap();
        assert_eq!(
            s.load().unwrap(),
            Some(50),
            "a lower seq overwrote a higher one"
        );
        other.store(45).unwrap();
        assert_eq!(other.load().unwrap(), Some(50));
        s.store(50).unwrap();
        s.store(51).unwrap();
        assert_eq!(other.load().unwrap(), Some(51));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn oversized_or_binary_file_is_corrupt_with_a_short_quote() {
        let d = tmpdir("big");
        let s = RingSeqStore::open(&d, 1).unwrap();
        fs::write(s.path(), "7".repeat(10 << 20)).unwrap();
        let e = s.initial_ring_seq().unwrap_err().to_string();
        assert!(
            e.contains("not a ring seq") && e.len() < 400,
            "{} bytes: {e}",
            e.len()
        );
        fs::write(s.path(), [0xff, 0xfe, b'1']).unwrap();
        let e = s.initial_ring_seq().unwrap_err().to_string();
        assert!(e.contains("not a ring seq"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn empty_directory_is_refused() {
        // "" would put ringseq-N in the working directory
        let e = RingSeqStore::open(Path::new(""), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
