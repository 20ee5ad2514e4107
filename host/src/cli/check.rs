//! `weft check`: the config, its secrets, its plugins and its pipelines and
//! triggers built as the host would build them, without serving.

use super::scratch::Scratch;
use anyhow::Result;
use std::path::Path;

pub(super) async fn run(path: &Path) -> Result<()> {
    let config = super::load_config(path)?;
    for files in [&config.server.tls, &config.server.admin_tls]
        .into_iter()
        .flatten()
    {
        crate::server::tls::Tls::load(files).map_err(anyhow::Error::msg)?;
    }
    let secrets = crate::secrets::Secrets::load(&config).map_err(anyhow::Error::msg)?;
    // Outbound trust and client certificates, as the host builds them.
    crate::sandbox::OutboundTls::build(&config, &secrets).map_err(anyhow::Error::msg)?;
    let scratch = Scratch::new(4096, Some(secrets))?;
    let (plugins, errors) = crate::host::load_plugins(&config, &scratch.sandbox, None).await?;
    for e in errors.values() {
        eprintln!("warning: {e}");
    }
    let engine = crate::engine::Engine::build(
        &config,
        scratch.store.clone(),
        scratch.sandbox.clone(),
        &plugins,
        &errors,
        &crate::engine::Switch::new(),
    )
    .await?;
    let secrets = scratch.sandbox.secrets();
    crate::trigger::Triggers::build(&config, &engine, secrets, &plugins, &errors).await?;
    let bad: Vec<String> = plugins
        .values()
        .flat_map(|p| crate::inspect::tampered_cache_entries(&config, &p.sha256))
        .map(|(_, why)| why)
        .collect();
    if !bad.is_empty() {
        anyhow::bail!(
            "the compiled-code cache was changed behind weft's back (the host will not run that code; it compiles again):\n{}",
            bad.join("\n")
        );
    }
    check_store(&config)?;
    if let Some(cache) = crate::sandbox::cache::CodeCache::existing_in(&config.server.data_dir) {
        let (entries, bytes) = cache.size();
        println!(
            "compiled-code cache: {entries} entries, {:.1} MiB of its {:.0} MiB budget (plugins.cache_max_bytes) in {} (code of plugins no longer loaded is removed when the host starts)",
            bytes as f64 / (1024.0 * 1024.0),
            config.plugins.cache_max_bytes as f64 / (1024.0 * 1024.0),
            config.server.data_dir.join("compiled").display()
        );
    }
    println!(
        "{}: ok ({} pipelines, {} plugins)",
        path.display(),
        config.pipelines.len(),
        plugins.len()
    );
    Ok(())
}

/// The store in `dir`, if there is one: it opens (not damaged, not rolled
/// back) and raises no alarm. A store a running host holds is that host's
/// to check: its alarms are in its log and `weft_store_alarms`.
fn check_store(config: &crate::config::Config) -> Result<()> {
    let dir = &config.server.data_dir;
    if !dir.join("db").exists() {
        return Ok(());
    }
    let store = match crate::store::open_for(config) {
        Ok(store) => store,
        Err(crate::store::StoreError::InUse { .. }) => {
            println!(
                "note: the store in {} is in use by a running host; its integrity alarms are in that host's log and its weft_store_alarms metric",
                dir.display()
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let alarms = store.alarms();
    store.close();
    if !alarms.is_empty() {
        anyhow::bail!("the store raised an alarm:\n{}", alarms.join("\n"));
    }
    Ok(())
}
