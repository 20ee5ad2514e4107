//! One configuration's running parts: secrets, sandbox, plugins, engine,
//! triggers and API state, built and checked whole before anything of them
//! runs. A host has one at a time; a reload builds the next beside it.

use super::{StartError, load_plugins};
use crate::config::Config;
use crate::engine::{Engine, Switch};
use crate::sandbox::cache::CodeCache;
use crate::sandbox::{LoadFailures, Plugins, Sandbox, SandboxOptions};
use crate::server::api::ApiState;
use crate::store::Store;
use crate::trigger::Triggers;
use std::sync::Arc;

/// What every generation of a host shares.
pub(super) struct Ground {
    pub store: Arc<dyn Store>,
    pub cache: Arc<CodeCache>,
    pub switch: Arc<Switch>,
    /// False only in the benchmark that measures what the guards cost.
    pub guards: bool,
    /// OAuth clients, kept across reloads with their tokens.
    pub oauth: Arc<crate::sandbox::oauth::Registry>,
}

/// One configuration, built and checked, not yet started.
pub(super) struct Generation {
    pub engine: Engine,
    pub triggers: Arc<Triggers>,
    pub api: ApiState,
    pub plugins: Plugins,
    pub load_errors: LoadFailures,
}

impl Generation {
    /// Load `config`'s secrets and plugins and build its engine, triggers
    /// and API state: every plugin a pipeline names compiles and accepts
    /// its config, every grant and secret is in place. Nothing runs yet.
    pub async fn build(config: &Config, ground: &Ground) -> Result<Generation, StartError> {
        let instances: usize = config
            .pipelines
            .iter()
            .map(|p| p.in_flight())
            .sum::<usize>()
            + 8;
        let max_memory = config
            .grants
            .values()
            .map(|g| g.memory_mib)
            .chain([crate::config::DEFAULT_MEMORY_MIB])
            .max()
            .unwrap_or(crate::config::DEFAULT_MEMORY_MIB);
        let secrets = Arc::new(crate::secrets::Secrets::load(config).map_err(StartError::Secrets)?);
        let mut options = SandboxOptions::new(instances.min(10_000) as u32, max_memory);
        options.fuel = config.grants.values().any(|g| g.fuel.is_some());
        if !ground.guards {
            tracing::warn!("plugins run without memory caps, time limits or egress checks");
            options.guards = false;
        }
        let upstreams = Arc::new(crate::limit::UpstreamLimits::new(&config.upstreams));
        let sandbox = Sandbox::with_options(ground.store.clone(), options)?
            .with_upstreams(upstreams.clone())
            .with_secrets(secrets.clone())
            .with_brokers(Arc::new(crate::messaging::Brokers::build(config, &secrets)))
            .with_trust(Arc::new(
                crate::sandbox::OutboundTls::build(config, &secrets).map_err(StartError::Tls)?,
            ));
        let oauth = ground.oauth.update(
            config,
            &secrets,
            &ground.store,
            sandbox.http_client(),
            sandbox.guarded(),
            upstreams,
        );
        let sandbox = Arc::new(sandbox.with_oauth(oauth));
        let (plugins, load_errors) =
            load_plugins(config, &sandbox, Some(ground.cache.clone())).await?;
        for (name, e) in &load_errors {
            if config.uses_plugin(name) {
                tracing::warn!("{e}");
            } else {
                // Nothing would run it: not worth a warning on every start.
                tracing::info!(plugin = %name, "unused plugin not loaded (no pipeline names it): {e}");
            }
        }
        let api = ApiState::new(config, &secrets, plugins.clone()).map_err(StartError::Admin)?;
        let engine = Engine::build(
            config,
            ground.store.clone(),
            sandbox,
            &plugins,
            &load_errors,
            &ground.switch,
        )
        .await?;
        let triggers =
            Arc::new(Triggers::build(config, &engine, &secrets, &plugins, &load_errors).await?);
        Ok(Generation {
            engine,
            triggers,
            api,
            plugins,
            load_errors,
        })
    }
}
