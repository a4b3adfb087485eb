//! The `crypto` setting: the key file (`cpgtool keygen` writes one, as
//! `corosync-keygen` does), the derived frame key, and the sealing epochs
//! kept in the state directory. Sealing itself is `cpg_core::seal`; the
//! transport applies it (`cpg_uring::SealSpec`).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cpg_core::seal::{KeyError, KeyMaterial, Mode, KEY_FILE_MAX, KEY_FILE_MIN};
use cpg_core::NodeId;
use cpg_uring::{EpochSource, SealSpec};
use serde::{Deserialize, Serialize};

use crate::lock;
use crate::state::write_durably;

/// What frames on the wire are protected with (`crypto = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Crypto {
    /// Nothing: anyone who can send from a member's address can forge its
    /// frames. A warning is printed at start. The default of a file that
    /// does not say, as in Corosync; configs written by `cpgtool` say
    /// `encrypt`.
    #[default]
    None,
    /// Every frame authenticated (AES-256-GCM's GMAC), sent in clear.
    Authenticate,
    /// Every frame encrypted and authenticated (AES-256-GCM).
    Encrypt,
}

impl Crypto {
    /// The sealing mode, `None` for no sealing.
    pub fn mode(self) -> Option<Mode> {
        match self {
            Crypto::None => None,
            Crypto::Authenticate => Some(Mode::Authenticate),
            Crypto::Encrypt => Some(Mode::Encrypt),
        }
    }
}

/// Bytes `cpgtool keygen` writes (`corosync-keygen`'s default, 2,048 bits).
pub const KEY_FILE_LEN: usize = 256;

/// Why a key file cannot be used or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Group or others may read it.
    #[error(
        "key file {path} is readable by group or others (mode {mode:04o}): chmod 0400 it (or 0600)"
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a usable key.
    #[error("key file {path}: {reason}")]
    Bad {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: KeyError,
    },
    /// `keygen` will not overwrite a key.
    #[error("key file {path} exists: remove it first if it really is to be replaced (every node needs the same key)")]
    Exists {
        /// The key file.
        path: PathBuf,
    },
}

/// Write a new random key to `path` (mode 0400; never over an existing
/// file).
///
/// # Errors
/// [`KeyFileError`].
pub fn generate_key(path: &Path) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut key = [0u8; KEY_FILE_LEN];
    let mut filled = 0;
    while filled < key.len() {
        filled +=
            rustix::rand::getrandom(&mut key[filled..], rustix::rand::GetRandomFlags::empty())
                .map_err(|e| io(e.into()))?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                KeyFileError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                io(e)
            }
        })?;
    f.write_all(&key).and_then(|()| f.sync_all()).map_err(io)?;
    key.fill(0);
    Ok(())
}

/// Read the key file at `path` and derive the frame key of `cluster`.
/// Refuses a file group or others can read, and any size outside
/// 32..=4,096 bytes (Corosync's `authkey` files are accepted as they are).
///
/// # Errors
/// [`KeyFileError`].
pub fn load_key(path: &Path, cluster: &str, mode: Mode) -> Result<KeyMaterial, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = fs::File::open(path).map_err(io)?;
    let perm = f.metadata().map_err(io)?.permissions().mode() & 0o777;
    if perm & 0o077 != 0 {
        return Err(KeyFileError::Exposed {
            path: path.to_path_buf(),
            mode: perm,
        });
    }
    let mut bytes = Vec::with_capacity(KEY_FILE_MIN);
    // One byte past the maximum tells "too long" without reading a huge file.
    f.take(KEY_FILE_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let key = KeyMaterial::derive(&bytes, cluster, mode).map_err(|reason| KeyFileError::Bad {
        path: path.to_path_buf(),
        reason,
    });
    bytes.fill(0);
    key
}

/// The sealing epochs of one node: `<state_dir>/epoch-<nodeid>`. Each new
/// epoch is above the stored one and above the wall clock in seconds (so a
/// lost state directory does not bring back an old epoch), and is durable
/// before it is handed out.
#[derive(Debug)]
pub struct EpochFile {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    last: Mutex<Option<u32>>,
}

impl EpochFile {
    /// The epoch file of `node` in `dir` (created when first needed).
    pub fn new(dir: &Path, node: NodeId) -> EpochFile {
        EpochFile {
            dir: dir.to_path_buf(),
            path: dir.join(format!("epoch-{node}")),
            tmp: dir.join(format!(".epoch-{node}.tmp")),
            last: Mutex::new(None),
        }
    }

    fn stored(&self) -> io::Result<u32> {
        match fs::read_to_string(&self.path) {
            Ok(s) => s.trim().parse::<u32>().map_err(|_| {
                io::Error::other(format!(
                    "{}: not an epoch ({:?}); remove it to start from the clock",
                    self.path.display(),
                    s.chars().take(40).collect::<String>()
                ))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl EpochSource for EpochFile {
    fn next_epoch(&self) -> io::Result<u32> {
        let mut last = lock(&self.last);
        let stored = match *last {
            Some(e) => e,
            None => {
                fs::create_dir_all(&self.dir)?;
                self.stored()?
            }
        };
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        let next = stored
            .checked_add(1)
            .ok_or_else(|| io::Error::other("sealing epochs exhausted (u32): generate a new key"))?
            .max(clock);
        write_durably(&self.dir, &self.tmp, &self.path, &format!("{next}\n"))?;
        *last = Some(next);
        Ok(next)
    }
}

/// The transport's sealing settings for a node, or `None` for
/// `crypto = "none"` (which prints a warning).
///
/// # Errors
/// The key file cannot be used.
pub fn seal_spec(
    crypto: Crypto,
    key_file: Option<&Path>,
    cluster: &str,
    state_dir: &Path,
    node: NodeId,
) -> Result<Option<SealSpec>, KeyFileError> {
    let Some(mode) = crypto.mode() else {
        eprintln!(
            "cpg node {node}: warning: crypto = \"none\": frames are neither authenticated nor \
             encrypted, so anyone who can send from a member's address can forge them \
             (set crypto = \"encrypt\" and a key_file made by `cpgtool keygen`)"
        );
        return Ok(None);
    };
    let path = key_file.ok_or_else(|| KeyFileError::Io {
        path: PathBuf::new(),
        source: io::Error::other("crypto is on but no key_file is set"),
    })?;
    let key = load_key(path, cluster, mode)?;
    Ok(Some(SealSpec {
        key: Arc::new(key),
        epochs: Arc::new(EpochFile::new(state_dir, node)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cpg-std-crypto-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn keygen_writes_a_private_random_key_once() {
        let d = tmpdir("keygen");
        let p = d.join("authkey");
        generate_key(&p).unwrap();
        let meta = fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o400);
        assert_eq!(meta.len(), KEY_FILE_LEN as u64);
        assert!(matches!(generate_key(&p), Err(KeyFileError::Exists { .. })));
        let q = d.join("other");
        generate_key(&q).unwrap();
        assert_ne!(fs::read(&p).unwrap(), fs::read(&q).unwrap());
        let a = load_key(&p, "c", Mode::Encrypt).unwrap();
        let b = load_key(&q, "c", Mode::Encrypt).unwrap();
        assert_ne!(a.id(), b.id());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn exposed_short_or_missing_keys_are_refused() {
        let d = tmpdir("bad");
        let p = d.join("k");
        fs::write(&p, [7u8; 64]).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_key(&p, "c", Mode::Encrypt).unwrap_err().to_string();
        assert!(e.contains("readable by group or others (mode 0644)"), "{e}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let e = load_key(&p, "c", Mode::Encrypt).unwrap_err().to_string();
        assert!(e.contains("all the same"), "{e}");
        fs::write(&p, b"short").unwrap();
        let e = load_key(&p, "c", Mode::Encrypt).unwrap_err().to_string();
        assert!(e.contains("5 bytes"), "{e}");
        fs::write(
            &p,
            vec![1u8; 10_000]
                .iter()
                .enumerate()
                .map(|(i, _)| i as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let e = load_key(&p, "c", Mode::Encrypt).unwrap_err().to_string();
        assert!(e.contains("4097 bytes"), "{e}");
        assert!(load_key(&d.join("absent"), "c", Mode::Encrypt).is_err());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn epochs_rise_across_restarts_and_clock() {
        let d = tmpdir("epoch");
        let a = EpochFile::new(&d, 1);
        let e1 = a.next_epoch().unwrap();
        let e2 = a.next_epoch().unwrap();
        assert!(e2 > e1);
        // A restart reads the file: above everything handed out before.
        let b = EpochFile::new(&d, 1);
        assert!(b.next_epoch().unwrap() > e2);
        // A stored epoch ahead of the clock still rises.
        fs::write(d.join("epoch-2"), format!("{}\n", u32::MAX - 1)).unwrap();
        assert_eq!(EpochFile::new(&d, 2).next_epoch().unwrap(), u32::MAX);
        assert!(EpochFile::new(&d, 2).next_epoch().is_err(), "exhausted");
        fs::write(d.join("epoch-3"), "junk").unwrap();
        assert!(EpochFile::new(&d, 3).next_epoch().is_err());
        let _ = fs::remove_dir_all(&d);
    }
}
