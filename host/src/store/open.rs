//! Opening a store: the embedded default in a directory, or the store a
//! host's config names, with the keys and connection secrets it needs.

use super::{JetStreamOptions, JetStreamStore, Keyring, SledStore, Store, StoreError, seal};
use std::path::Path;
use std::sync::Arc;

/// Open the embedded default store in `dir`, unencrypted.
pub fn open(dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(SledStore::open(dir)?))
}

/// Open the store of a host started with `config`: its data directory
/// (or, with `[store] backend = "jetstream"`, the cluster), with the keys
/// `server.encryption` names.
pub fn open_for(config: &crate::config::Config) -> Result<Arc<dyn Store>, StoreError> {
    let (keys, jetstream) = store_secrets(config)?;
    if let Some(options) = jetstream {
        return Ok(Arc::new(JetStreamStore::open(options, keys)?));
    }
    Ok(Arc::new(SledStore::open_with(
        &config.server.data_dir,
        keys,
    )?))
}

/// What opening the store of `config` takes from the secrets source, read
/// once: the keys `server.encryption` names and, with `[store] backend =
/// "jetstream"`, how to reach the cluster.
pub fn store_secrets(
    config: &crate::config::Config,
) -> Result<(Keyring, Option<JetStreamOptions>), StoreError> {
    let jetstream = config.store.backend == crate::config::StoreBackend::Jetstream;
    let fail = |reason: String| StoreError::Open {
        dir: if jetstream {
            std::path::PathBuf::from(format!("jetstream {}", config.store.url))
        } else {
            config.server.data_dir.clone()
        },
        reason,
    };
    let secrets = crate::secrets::Secrets::load_store_keys(config).map_err(fail)?;
    let keys = keyring(config, &secrets).map_err(fail)?;
    if !jetstream {
        return Ok((keys, None));
    }
    let c = &config.store;
    let audit_key = key_named(
        &secrets,
        c.audit_key.as_deref().unwrap_or_default(),
        "store.audit_key",
    )
    .map_err(fail)?;
    let secret = match &c.credential {
        Some(name) => Some(
            secrets
                .get(name)
                .ok_or_else(|| fail(format!("credential {name} (store.credential) is not set")))?
                .to_string(),
        ),
        None => None,
    };
    let options = JetStreamOptions {
        url: c.url.clone(),
        user: c.user.clone(),
        secret,
        replicas: c.replicas,
        prefix: c.prefix.clone(),
        audit_key,
        timeout: std::time::Duration::from_millis(c.timeout_ms),
        host_name: host_name(config),
        max_body_bytes: config.server.max_body_bytes,
    };
    Ok((keys, Some(options)))
}

/// The 32-byte key in the credential `name`, which `setting` names.
fn key_named(
    secrets: &crate::secrets::Secrets,
    name: &str,
    setting: &str,
) -> Result<[u8; 32], String> {
    let value = secrets
        .get(name)
        .ok_or_else(|| format!("credential {name} ({setting}) is not set"))?;
    seal::parse_key(value).map_err(|why| format!("credential {name} ({setting}) {why}"))
}

/// A name for this host that stays the same across restarts: the
/// machine's name and the address it listens on.
fn host_name(config: &crate::config::Config) -> String {
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "host".into());
    format!("{}-{}", machine.trim(), config.server.listen)
}

/// The keys `server.encryption` names, from `secrets`.
fn keyring(
    config: &crate::config::Config,
    secrets: &crate::secrets::Secrets,
) -> Result<Keyring, String> {
    let Some(e) = &config.server.encryption else {
        return Ok(Keyring::plain());
    };
    let key = |name: &str| key_named(secrets, name, "server.encryption");
    let current = key(&e.key)?;
    let previous = e
        .previous
        .iter()
        .map(|n| key(n))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Keyring::new(current, &previous))
}
