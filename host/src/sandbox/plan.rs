//! A plugin's plan: the URLs it says a config will make it call (its
//! optional `planner` export), held against its grant before anything runs.

use super::bindings::PLANNER_EXPORT;
use super::bindings::WitError;
use super::outcome::{check_output, finish};
use super::plugin::{Plugin, Pre};
use super::runtime::Sandbox;
use super::state::HostState;
use super::types::{CallContext, CallError};
use crate::store::ErrorKind;
use std::sync::Arc;
use wasmtime::component::InstancePre;

impl Pre {
    fn instance_pre(&self) -> &InstancePre<HostState> {
        match self {
            Pre::Transform(p) => p.instance_pre(),
            Pre::Sink(p) => p.instance_pre(),
            Pre::BatchSink(p) => p.instance_pre(),
            Pre::Source(p) => p.instance_pre(),
        }
    }
}

impl Plugin {
    /// Whether it exports `planner`.
    pub fn plans(&self) -> bool {
        self.exports.iter().any(|e| e == PLANNER_EXPORT)
    }
}

impl Sandbox {
    /// The JSON Schema of the plugin's config, as it describes itself:
    /// asked once per loaded plugin, however many steps name it.
    pub async fn config_schema(&self, plugin: &Plugin) -> Result<String, CallError> {
        if let Some(s) = plugin.schema.get() {
            return Ok(s.clone());
        }
        let (_, _, schema) = self.describe(plugin).await?;
        Ok(plugin.schema.get_or_init(|| schema).clone())
    }

    /// A plugin whose file name carries no version is asked for its own
    /// (its config schema comes in the same answer, and is kept).
    pub async fn learn_version(&self, plugin: &mut Plugin) {
        if plugin.version.is_some() {
            return;
        }
        match self.describe(plugin).await {
            Ok((_, version, schema)) => {
                plugin.version = Some(version).filter(|v| !v.is_empty());
                let _ = plugin.schema.set(schema);
            }
            Err(e) => {
                tracing::debug!(plugin = %plugin.name, "describe failed: {}", e.message);
            }
        }
    }

    /// The URLs `plugin` says `config` will make it call, or `None` when it
    /// does not export `planner`. Called on a fresh instance, unconfigured,
    /// with the plugin's limits.
    pub async fn plan(
        &self,
        plugin: &Plugin,
        config: &str,
        pipeline: &str,
    ) -> Result<Option<Vec<String>>, CallError> {
        if !plugin.plans() {
            return Ok(None);
        }
        let ctx = CallContext::background(pipeline, &plugin.name);
        let mut store = self.new_store(plugin, Arc::new(ctx));
        let instance_pre = plugin.pre.instance_pre();
        let call = async {
            let instance = instance_pre.instantiate_async(&mut store).await?;
            let missing = || wasmtime::format_err!("{PLANNER_EXPORT} has no plan function");
            let iface = instance
                .get_export_index(&mut store, None, PLANNER_EXPORT)
                .ok_or_else(missing)?;
            let func = instance
                .get_export_index(&mut store, Some(&iface), "plan")
                .ok_or_else(missing)?;
            let plan = instance
                .get_typed_func::<(&str,), (Result<Vec<String>, String>,)>(&mut store, &func)?;
            let (answer,) = plan.call_async(&mut store, (config,)).await?;
            Ok(answer.map_err(WitError::Fatal))
        };
        let result = tokio::time::timeout(plugin.limits.timeout, call).await;
        let urls = finish(plugin, &mut store, result)?;
        let size = urls.iter().map(String::len).sum();
        check_output(plugin, &store, size)?;
        Ok(Some(urls))
    }

    /// Check that every URL `plugin` plans for `config` is inside its
    /// grant; an error naming each one outside it (or the plugin's refusal
    /// of the config).
    pub async fn check_plan(
        &self,
        plugin: &Plugin,
        config: &str,
        pipeline: &str,
    ) -> Result<(), CallError> {
        let Some(urls) = self.plan(plugin, config, pipeline).await? else {
            return Ok(());
        };
        let origins = &plugin.limits.origins;
        let outside: Vec<String> = urls
            .iter()
            .filter(|u| {
                u.parse::<http::Uri>()
                    .map_or(true, |uri| !origins.iter().any(|o| o.allows_uri(&uri)))
            })
            .cloned()
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        let granted: Vec<String> = plugin.grant().http.iter().map(|o| o.to_string()).collect();
        Err(CallError::new(
            ErrorKind::Fatal,
            format!(
                "with this config plugin {} will call {}, outside its grant (grants.{}.http = [{}]); every such request would be denied. Fix the URL, or add its origin to the grant",
                plugin.name,
                outside.join(", "),
                plugin.name,
                granted
                    .iter()
                    .map(|g| format!("{g:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }
}
