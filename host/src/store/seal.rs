//! Encryption at rest: payloads, event records (headers, keys, errors) and
//! plugin state are sealed with XChaCha20-Poly1305 under a key from the
//! secrets source before the store writes them, and opened when read.
//!
//! A sealed value is `MAGIC`, the key's id (8 bytes of a hash of the key,
//! never the key), a random 24-byte nonce and the ciphertext with its tag.
//! Each value is bound to the place it is stored at (its key in the store
//! is the associated data), so a value moved to another record does not
//! open. New values are sealed under the current key; values under a
//! previous key still open, and `weft store reencrypt` moves them over.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::Digest;
use std::fmt;

/// First byte of a sealed value. Event records start with their version
/// (1 to 4), so a sealed record is told from a plain one by it.
pub const MAGIC: u8 = 0xE5;
/// Bytes a sealed value takes besides its plaintext.
pub const OVERHEAD: usize = 1 + 8 + 24 + 16;

/// A key's id: the first 8 bytes of SHA-256 over a label and the key.
pub type KeyId = [u8; 8];

/// One store key.
#[derive(Clone)]
struct StoreKey {
    id: KeyId,
    cipher: XChaCha20Poly1305,
}

/// The keys a store is read and written with: none (plain), or a current
/// key and the previous keys still read.
#[derive(Clone, Default)]
pub struct Keyring {
    current: Option<StoreKey>,
    previous: Vec<StoreKey>,
    /// Opened only to be copied or checked (a backup being verified): no
    /// key is needed to open, and reading a sealed value fails.
    opaque: bool,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.as_ref().map(|k| show_id(&k.id)))
            .field(
                "previous",
                &self
                    .previous
                    .iter()
                    .map(|k| show_id(&k.id))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A key id as shown in messages.
pub fn show_id(id: &KeyId) -> String {
    hex::encode(id)
}

/// Parse a key as written in the secrets source: 64 hex digits or the
/// base64 of 32 bytes.
pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine as _;
    let text = text.trim();
    let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(text).ok()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .ok()
    };
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            "is not a store key: a key is 32 random bytes written as 64 hex digits (make one with `weft store keygen`)".to_string()
        })
}

/// A new random key, as 64 hex digits.
pub fn generate_key() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn key_id(key: &[u8; 32]) -> KeyId {
    let digest = sha2::Sha256::new()
        .chain_update(b"weft store key id\0")
        .chain_update(key)
        .finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

fn store_key(key: &[u8; 32]) -> StoreKey {
    StoreKey {
        id: key_id(key),
        cipher: XChaCha20Poly1305::new(key.into()),
    }
}

impl Keyring {
    /// No encryption: values are written as they are.
    pub fn plain() -> Keyring {
        Keyring::default()
    }

    /// For copying or checking a store without its keys: sealed values
    /// stay sealed and cannot be read.
    pub fn opaque() -> Keyring {
        Keyring {
            opaque: true,
            ..Keyring::default()
        }
    }

    /// Seal new values under `current`; open values under it or any of
    /// `previous`.
    pub fn new(current: [u8; 32], previous: &[[u8; 32]]) -> Keyring {
        Keyring {
            current: Some(store_key(&current)),
            previous: previous.iter().map(store_key).collect(),
            opaque: false,
        }
    }

    /// Whether new values are sealed.
    pub fn seals(&self) -> bool {
        self.current.is_some()
    }

    /// Whether the store is opened without its keys on purpose.
    pub fn is_opaque(&self) -> bool {
        self.opaque
    }

    /// The id of the key new values are sealed under.
    pub fn current_id(&self) -> Option<KeyId> {
        self.current.as_ref().map(|k| k.id)
    }

    /// The ids of every key this ring opens.
    pub fn ids(&self) -> Vec<KeyId> {
        self.current
            .iter()
            .chain(&self.previous)
            .map(|k| k.id)
            .collect()
    }

    /// `plain` sealed under the current key for the place `at`, or `None`
    /// when the ring does not seal.
    pub fn seal(&self, at: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.current.as_ref()?;
        let nonce: [u8; 24] = rand::random();
        let sealed = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: at,
                },
            )
            // Encryption fails only for inputs past 256 GiB.
            .expect("a value within the store's limits seals");
        let mut out = Vec::with_capacity(OVERHEAD + plain.len());
        out.push(MAGIC);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// `plain` sealed when the ring seals, else as it is.
    pub fn seal_or_keep(&self, at: &[u8], plain: Vec<u8>) -> Vec<u8> {
        self.seal(at, &plain).unwrap_or(plain)
    }

    /// Open a value sealed for the place `at`.
    pub fn open(&self, at: &[u8], sealed: &[u8]) -> Result<Vec<u8>, String> {
        let id = sealed_id(sealed).ok_or("a sealed value is cut short")?;
        let key = self
            .current
            .iter()
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| {
                if self.opaque {
                    "the store was opened without its keys".to_string()
                } else {
                    format!(
                        "a value is sealed under key {}, which is not among the configured keys (server.encryption)",
                        show_id(&id)
                    )
                }
            })?;
        key.cipher
            .decrypt(
                XNonce::from_slice(&sealed[9..33]),
                Payload {
                    msg: &sealed[33..],
                    aad: at,
                },
            )
            .map_err(|_| {
                "a sealed value does not open: it was changed on disk or moved from another place in the store".to_string()
            })
    }

    /// Whether a sealed value should be sealed again: it is under a key
    /// other than the current one, or the ring seals and it is plain.
    pub fn stale(&self, sealed: Option<KeyId>) -> bool {
        match (self.current_id(), sealed) {
            (Some(current), Some(id)) => current != id,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The key id of a sealed value, or `None` when it is not one.
pub fn sealed_id(value: &[u8]) -> Option<KeyId> {
    if value.len() < OVERHEAD || value[0] != MAGIC {
        return None;
    }
    value[1..9].try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_seal_open_and_stay_in_their_place() {
        let old = Keyring::new([1; 32], &[]);
        let sealed = old.seal(b"e1", b"canary-7f3a").unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"canary-7f3a"));
        assert_eq!(old.open(b"e1", &sealed).unwrap(), b"canary-7f3a");
        // Moved to another record: refused.
        assert!(old.open(b"e2", &sealed).unwrap_err().contains("moved"));
        // One bit changed: refused.
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(old.open(b"e1", &flipped).is_err());
        // Rotated: the old key still opens, new values go under the new one.
        let rotated = Keyring::new([2; 32], &[[1; 32]]);
        assert_eq!(rotated.open(b"e1", &sealed).unwrap(), b"canary-7f3a");
        assert!(rotated.stale(sealed_id(&sealed)));
        let again = rotated.seal(b"e1", b"x").unwrap();
        assert!(!rotated.stale(sealed_id(&again)));
        // Without the old key: named, not garbage.
        let new_only = Keyring::new([2; 32], &[]);
        let err = new_only.open(b"e1", &sealed).unwrap_err();
        assert!(err.contains(&show_id(&key_id(&[1; 32]))), "{err}");
        assert!(Keyring::plain().seal(b"e1", b"x").is_none());
    }

    #[test]
    fn keys_are_hex_or_base64_of_32_bytes() {
        let hex_key = generate_key();
        assert_eq!(parse_key(&hex_key).unwrap().len(), 32);
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(parse_key(&b64).unwrap(), [7u8; 32]);
        assert!(parse_key("correct horse battery staple").is_err());
        assert!(parse_key(&hex_key[..62]).is_err());
    }
}
