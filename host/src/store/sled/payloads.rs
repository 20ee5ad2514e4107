//! Large payloads as files of their own, beside sled. sled keeps values in
//! its tree nodes and rewrites a whole node when a key near it changes, so
//! payloads of hundreds of KiB written next to each other were stored
//! several times over; a file is written once and removed once.
//!
//! A payload from [`FILE_FROM_BYTES`] up goes to `payloads/<id>`, written
//! and synced by the committer before the batch that names it commits; its
//! key in sled then holds a marker with the file's SHA-256, so a file
//! changed behind weft's back is refused when read. Files no record names
//! (a crash between the file and its commit, or between a delete's commit
//! and the unlink) are removed when the store opens.

use super::keys::{BODY, body_key};
use crate::store::seal::{self, Keyring};
use crate::store::{EventId, StoreError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Payloads this large or larger go to a file of their own.
pub(super) const FILE_FROM_BYTES: usize = 64 * 1024;

/// First byte of a payload key's value: the payload follows.
const INLINE: u8 = 0;
/// First byte of a payload key's value: the payload is in a file, with
/// this SHA-256.
const IN_FILE: u8 = 1;
/// As [`INLINE`], sealed (see [`crate::store::seal`]).
const SEALED_INLINE: u8 = 2;
/// As [`IN_FILE`], the file holding the sealed payload.
const SEALED_FILE: u8 = 3;

/// The directory of payload files.
#[derive(Debug, Clone)]
pub(super) struct Payloads {
    dir: PathBuf,
}

/// How one payload is stored: the value of its key, and the file to write
/// first, if any.
pub(super) struct Stored {
    pub value: Vec<u8>,
    pub file: Option<(EventId, Vec<u8>)>,
}

/// How to store `payload` of event `id`, sealed when `keys` seal.
pub(super) fn store(id: EventId, payload: &[u8], keys: &Keyring) -> Stored {
    let sealed = keys.seal(&body_key(&id), payload);
    let (bytes, inline, in_file) = match &sealed {
        Some(s) => (s.as_slice(), SEALED_INLINE, SEALED_FILE),
        None => (payload, INLINE, IN_FILE),
    };
    if payload.len() < FILE_FROM_BYTES {
        let mut value = Vec::with_capacity(bytes.len() + 1);
        value.push(inline);
        value.extend_from_slice(bytes);
        return Stored { value, file: None };
    }
    let mut value = vec![in_file];
    value.extend_from_slice(&Sha256::digest(bytes));
    Stored {
        value,
        file: Some((id, sealed.unwrap_or_else(|| payload.to_vec()))),
    }
}

/// The key a payload key's `value` is sealed under, read from the value
/// or its file; `None` for a plain one. For `weft store reencrypt`.
pub(super) fn sealed_under(
    payloads: &Payloads,
    id: &EventId,
    value: &[u8],
) -> Option<crate::store::seal::KeyId> {
    match value.split_first() {
        Some((&SEALED_INLINE, sealed)) => seal::sealed_id(sealed),
        Some((&SEALED_FILE, _)) => {
            let mut head = [0u8; seal::OVERHEAD];
            use std::io::Read;
            std::fs::File::open(payloads.path(id))
                .and_then(|mut f| f.read_exact(&mut head))
                .ok()?;
            seal::sealed_id(&head)
        }
        _ => None,
    }
}

impl Payloads {
    /// The payload directory under the store's `dir`, made if missing.
    pub fn open(dir: &Path) -> std::io::Result<Payloads> {
        let dir = dir.join("payloads");
        crate::private::dir(&dir)?;
        Ok(Payloads { dir })
    }

    fn path(&self, id: &EventId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Write and sync new payload files, then the directory, so they are
    /// durable before anything names them.
    pub fn write(&self, files: &[(EventId, Vec<u8>)]) -> std::io::Result<()> {
        for (id, bytes) in files {
            let path = self.path(id);
            // A leftover of a crashed write of the same event: never named.
            let _ = std::fs::remove_file(&path);
            crate::private::write_new(&path, bytes)?;
        }
        if !files.is_empty() {
            std::fs::File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Write, sync and remove a small file: whether payload files can be
    /// written now (a full disk, a directory made unusable).
    pub fn probe(&self) -> std::io::Result<()> {
        let path = self.dir.join(".probe");
        let _ = std::fs::remove_file(&path);
        crate::private::write_new(&path, b"probe")?;
        std::fs::remove_file(&path)
    }

    /// Remove the files of these events, if they have any.
    pub fn remove(&self, ids: &[EventId]) {
        for id in ids {
            let _ = std::fs::remove_file(self.path(id));
        }
    }

    /// The payload a key's `value` stands for.
    pub fn read(&self, id: &EventId, value: &[u8], keys: &Keyring) -> Result<Vec<u8>, StoreError> {
        let open = |sealed: &[u8]| {
            keys.open(&body_key(id), sealed)
                .map_err(|why| StoreError::Read(format!("the payload of event {id}: {why}")))
        };
        match value.split_first() {
            Some((&INLINE, payload)) => Ok(payload.to_vec()),
            Some((&SEALED_INLINE, sealed)) => open(sealed),
            Some((&tag @ (IN_FILE | SEALED_FILE), digest)) => {
                let bytes = std::fs::read(self.path(id)).map_err(|e| {
                    StoreError::Read(format!(
                        "the payload file of event {id} cannot be read ({e}); restore {} from a backup",
                        self.path(id).display()
                    ))
                })?;
                if Sha256::digest(&bytes).as_slice() != digest {
                    return Err(StoreError::Read(format!(
                        "the payload file of event {id} was changed on disk (its SHA-256 no longer matches the one stored with the event); restore {} from a backup",
                        self.path(id).display()
                    )));
                }
                if tag == SEALED_FILE {
                    open(&bytes)
                } else {
                    Ok(bytes)
                }
            }
            _ => Err(StoreError::Read(format!(
                "the payload of event {id} is stored in a form this weft does not know"
            ))),
        }
    }

    /// Remove files no payload key names as in a file; returns how many.
    pub fn remove_orphans(&self, events: &sled::Tree) -> std::io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let named = name.parse::<EventId>().ok().is_some_and(|id| {
                matches!(events.get(body_key(&id)), Ok(Some(v)) if matches!(v.first(), Some(&(IN_FILE | SEALED_FILE))))
            });
            if !named {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Bytes of the payload files.
    pub fn bytes(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// Whether `key = value` is a payload key naming a file.
pub(super) fn names_file(key: &[u8], value: &[u8]) -> bool {
    key.first() == Some(&BODY) && matches!(value.first(), Some(&(IN_FILE | SEALED_FILE)))
}

/// Ids of the events whose payload keys are among `keys` (for the files to
/// remove once their removal commits).
pub(super) fn ids_of(keys: &[Vec<u8>]) -> Vec<EventId> {
    keys.iter()
        .filter(|k| k.first() == Some(&BODY))
        .filter_map(|k| EventId::from_slice(&k[1..]))
        .collect()
}
