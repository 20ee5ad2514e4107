//! What the admin commands ask of a host: one trait, answered by a running
//! host's API ([`HttpAdmin`]) or, when none runs, by the store itself
//! ([`LocalAdmin`]); both return the views the API serialises.

use super::HostArg;
use super::client::{ClientError, HostClient};
use crate::config::Config;
use crate::engine::{
    DeadLetterView, EventView, PipelineStatus, ReplayOutcome, RunSummary, Selection,
};
use crate::redact::FieldRedaction;
use crate::store::{AuditEntry, EventId, Store};
use anyhow::{Context, Result, anyhow, bail};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A future of an admin call.
pub type AdminFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + 'a>>;

/// What to do with selected dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlqAction {
    /// Put them back in their pipeline.
    Replay,
    /// Delete them for good.
    Purge,
    /// Queue their compensations.
    Compensate,
}

impl DlqAction {
    /// `replay` or `purge`, as the API path and the audit log name it.
    pub fn as_str(self) -> &'static str {
        match self {
            DlqAction::Replay => "replay",
            DlqAction::Purge => "purge",
            DlqAction::Compensate => "compensate",
        }
    }
}

/// Which events `runs list` shows.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    /// Only this pipeline.
    pub pipeline: Option<String>,
    /// Only this state.
    pub state: Option<String>,
    /// Only events accepted since (RFC 3339, or an age such as `2h`).
    pub since: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// The admin operations of a host.
pub trait Admin {
    /// Whether this is the store of a stopped host rather than a running one.
    fn is_local(&self) -> bool;
    /// Dead letters, oldest first.
    fn dead_letters(
        &self,
        pipeline: Option<String>,
        since: Option<String>,
    ) -> AdminFuture<'_, Vec<DeadLetterView>>;
    /// Replay or purge the selected dead letters.
    fn dead_letter_action(
        &self,
        action: DlqAction,
        selection: Selection,
    ) -> AdminFuture<'_, Vec<ReplayOutcome>>;
    /// Pause or resume a pipeline.
    fn set_paused(&self, pipeline: String, paused: bool) -> AdminFuture<'_, ()>;
    /// Delete the queued events of a pipeline no longer configured.
    fn purge_queued(&self, pipeline: String) -> AdminFuture<'_, usize>;
    /// Every pipeline's status.
    fn pipelines(&self) -> AdminFuture<'_, Vec<PipelineStatus>>;
    /// Bytes in memory and on disk, by kind (in memory: only a running host).
    fn usage(&self) -> AdminFuture<'_, crate::engine::Usage>;
    /// The run history, newest first.
    fn runs(&self, query: RunQuery) -> AdminFuture<'_, Vec<RunSummary>>;
    /// One event.
    fn event(&self, id: EventId) -> AdminFuture<'_, EventView>;
    /// Erase a data subject.
    fn erase(
        &self,
        request: crate::engine::EraseRequest,
    ) -> AdminFuture<'_, crate::engine::Erasure>;
    /// The state of every credential the grants attach.
    fn credentials(&self) -> AdminFuture<'_, Vec<crate::sandbox::oauth::CredentialStatus>>;
    /// The store's encryption at rest.
    fn encryption(&self) -> AdminFuture<'_, crate::store::Encryption>;
    /// Seal every value again under the current key.
    fn reencrypt(&self) -> AdminFuture<'_, crate::store::Reencrypted>;
}

/// The host named by `--url` or the config, if it answers; otherwise its
/// store, opened on first use.
pub async fn connect(host: &HostArg) -> Result<Box<dyn Admin>> {
    let (client, config) = client(host, Listener::Admin)?;
    match client.call(hyper::Method::GET, "/healthz", None, &[]).await {
        Ok(_) => Ok(Box::new(HttpAdmin { client })),
        Err(ClientError::NotRunning(_)) => Ok(Box::new(LocalAdmin { config })),
        Err(e) => Err(e.into()),
    }
}

/// Which of a host's listeners a command talks to.
#[derive(Debug, Clone, Copy)]
pub enum Listener {
    /// Webhooks (`server.listen`).
    Public,
    /// The admin API (`server.admin_listen`).
    Admin,
}

/// A client for the host named by `--url` or the config's listener, with
/// the admin token from the environment; and the config, if it loaded.
pub fn client(host: &HostArg, listener: Listener) -> Result<(HostClient, Option<Config>)> {
    let config = super::load_config(&host.config.config);
    // The listener's address and TLS files, as the config has them.
    let (addr, tls) = match (&config, listener) {
        (Ok(c), Listener::Public) => (Some(c.server.listen), c.server.tls.as_ref()),
        (Ok(c), Listener::Admin) => (Some(c.server.admin_addr()), c.server.admin_tls.as_ref()),
        (Err(_), _) => (None, None),
    };
    let url = match (&host.url, addr) {
        (Some(url), _) => url.clone(),
        (None, Some(a)) => {
            // A listener on every address is reached on loopback.
            let a = if a.ip().is_unspecified() {
                std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), a.port())
            } else {
                a
            };
            format!("{}://{a}", if tls.is_some() { "https" } else { "http" })
        }
        (None, None) => {
            let why = config
                .as_ref()
                .err()
                .map_or(String::new(), ToString::to_string);
            bail!("{why}\n(pass --url to reach a host without a config file)")
        }
    };
    let token = cli_token(host)?;
    let client = match tls {
        Some(files) if url.starts_with("https://") => HostClient::with_tls(
            &url,
            token,
            crate::sandbox::OutboundTls::web_and(&files.cert, host.client_identity())
                .map_err(anyhow::Error::msg)?,
        )
        // A listener that requires client certificates may refuse a
        // client in a way only a broken connection shows.
        .asked_certificate(
            files.client_ca.is_some() && files.client_auth == crate::config::ClientAuth::Required,
            host.client_identity().is_some(),
        ),
        _ => HostClient::new(&url, token),
    };
    Ok((client, config.ok()))
}

/// The CLI's admin token: `--token-file`, else `WEFT_TOKEN`, else (with a
/// warning) the old `WEFT_ADMIN_TOKEN`. Only the CLI reads these.
fn cli_token(host: &HostArg) -> Result<Option<String>> {
    if let Some(path) = &host.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        let token = text.trim().to_string();
        if token.is_empty() {
            bail!("the token file {} is empty", path.display());
        }
        return Ok(Some(token));
    }
    let var = |name: &str| std::env::var(name).ok().filter(|t| !t.is_empty());
    if let Some(t) = var("WEFT_TOKEN") {
        return Ok(Some(t));
    }
    let old = var("WEFT_ADMIN_TOKEN");
    if old.is_some() {
        eprintln!(
            "warning: WEFT_ADMIN_TOKEN is deprecated for the CLI; export the token as WEFT_TOKEN (or pass --token-file). The server never reads either."
        );
    }
    Ok(old)
}

/// The message for a host that does not answer.
pub fn not_running(url: &str) -> anyhow::Error {
    anyhow!("no weft host answers at {url}; start one with `weft run`, or pass --url")
}

/// A running host, through its API.
pub struct HttpAdmin {
    client: HostClient,
}

impl HttpAdmin {
    /// Call the API and take `field` of a 200 answer as `T`.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
        field: Option<&str>,
    ) -> Result<T> {
        let reply = self.client.call(method, path, body, &[]).await?;
        if reply.status != 200 {
            let said = match &reply.body["error"] {
                serde_json::Value::Null => reply.body.clone(),
                e => e.clone(),
            };
            bail!("the host answered {}: {said}", reply.status);
        }
        let value = match field {
            Some(f) => reply.body[f].clone(),
            None => reply.body,
        };
        serde_json::from_value(value).map_err(|e| anyhow!("unexpected answer from the host: {e}"))
    }
}

fn with_query(path: &str, pairs: &[(&str, &Option<String>)]) -> String {
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
        .collect();
    if pairs.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", crate::server::query::encode(&pairs))
    }
}

impl Admin for HttpAdmin {
    fn is_local(&self) -> bool {
        false
    }

    fn dead_letters(
        &self,
        pipeline: Option<String>,
        since: Option<String>,
    ) -> AdminFuture<'_, Vec<DeadLetterView>> {
        Box::pin(async move {
            let path = with_query("/api/v1/dlq", &[("pipeline", &pipeline), ("since", &since)]);
            self.get(hyper::Method::GET, &path, None, Some("dead_letters"))
                .await
        })
    }

    fn dead_letter_action(
        &self,
        action: DlqAction,
        selection: Selection,
    ) -> AdminFuture<'_, Vec<ReplayOutcome>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&selection)?;
            let path = format!("/api/v1/dlq/{}", action.as_str());
            self.get(hyper::Method::POST, &path, Some(body), Some("results"))
                .await
        })
    }

    fn set_paused(&self, pipeline: String, paused: bool) -> AdminFuture<'_, ()> {
        Box::pin(async move {
            let action = if paused { "pause" } else { "resume" };
            let path = format!("/api/v1/pipelines/{pipeline}/{action}");
            let _: serde_json::Value = self.get(hyper::Method::POST, &path, None, None).await?;
            Ok(())
        })
    }

    fn erase(
        &self,
        request: crate::engine::EraseRequest,
    ) -> AdminFuture<'_, crate::engine::Erasure> {
        Box::pin(async move {
            let body = serde_json::to_vec(&request)?;
            self.get(hyper::Method::POST, "/api/v1/erase", Some(body), None)
                .await
        })
    }

    fn credentials(&self) -> AdminFuture<'_, Vec<crate::sandbox::oauth::CredentialStatus>> {
        Box::pin(async move {
            self.get(
                hyper::Method::GET,
                "/api/v1/credentials",
                None,
                Some("credentials"),
            )
            .await
        })
    }

    fn encryption(&self) -> AdminFuture<'_, crate::store::Encryption> {
        Box::pin(async move {
            self.get(hyper::Method::GET, "/api/v1/store/encryption", None, None)
                .await
        })
    }

    fn reencrypt(&self) -> AdminFuture<'_, crate::store::Reencrypted> {
        Box::pin(async move {
            self.get(hyper::Method::POST, "/api/v1/store/reencrypt", None, None)
                .await
        })
    }

    fn purge_queued(&self, pipeline: String) -> AdminFuture<'_, usize> {
        Box::pin(async move {
            let path = format!("/api/v1/pipelines/{pipeline}/purge");
            self.get(hyper::Method::POST, &path, None, Some("purged"))
                .await
        })
    }

    fn pipelines(&self) -> AdminFuture<'_, Vec<PipelineStatus>> {
        Box::pin(async move {
            self.get(
                hyper::Method::GET,
                "/api/v1/pipelines",
                None,
                Some("pipelines"),
            )
            .await
        })
    }

    fn usage(&self) -> AdminFuture<'_, crate::engine::Usage> {
        Box::pin(async move {
            self.get(hyper::Method::GET, "/api/v1/usage", None, None)
                .await
        })
    }

    fn runs(&self, q: RunQuery) -> AdminFuture<'_, Vec<RunSummary>> {
        Box::pin(async move {
            let limit = Some(q.limit.to_string());
            let path = with_query(
                "/api/v1/events",
                &[
                    ("limit", &limit),
                    ("pipeline", &q.pipeline),
                    ("state", &q.state),
                    ("since", &q.since),
                ],
            );
            self.get(hyper::Method::GET, &path, None, Some("events"))
                .await
        })
    }

    fn event(&self, id: EventId) -> AdminFuture<'_, EventView> {
        Box::pin(async move {
            let path = format!("/api/v1/events/{id}");
            self.get(hyper::Method::GET, &path, None, None).await
        })
    }
}

/// The store of a host that is not running, opened on first use. Changes
/// are written to the audit log under the local user's name.
pub struct LocalAdmin {
    config: Option<Config>,
}

impl LocalAdmin {
    fn config(&self) -> Result<&Config> {
        self.config
            .as_ref()
            .context("no host is running and no config file was found to open its data directory")
    }

    fn store(&self) -> Result<Arc<dyn Store>> {
        Ok(crate::store::open_for(self.config()?)?)
    }

    fn redaction(&self) -> FieldRedaction {
        self.config
            .as_ref()
            .map(|c| FieldRedaction::new(c.redact_lists()))
            .unwrap_or_default()
    }
}

/// Record a change made on the store directly (no host running) in the
/// audit log, under the local user's name.
fn audit_local(store: &dyn Store, action: &str, pipeline: &str, detail: String) {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    if let Err(e) = store.audit().append(AuditEntry {
        kind: "admin",
        actor: format!("local:{user}"),
        pipeline: pipeline.to_string(),
        action: action.to_string(),
        detail,
    }) {
        eprintln!("warning: could not write the audit log: {e}");
    }
}

impl Admin for LocalAdmin {
    fn is_local(&self) -> bool {
        true
    }

    fn dead_letters(
        &self,
        pipeline: Option<String>,
        since: Option<String>,
    ) -> AdminFuture<'_, Vec<DeadLetterView>> {
        Box::pin(async move {
            let redaction = self.redaction();
            let store = self.store()?;
            crate::engine::dead_letter_views(
                &store,
                pipeline.as_deref(),
                since.as_deref(),
                &redaction,
            )
            .map_err(anyhow::Error::msg)
        })
    }

    fn dead_letter_action(
        &self,
        action: DlqAction,
        selection: Selection,
    ) -> AdminFuture<'_, Vec<ReplayOutcome>> {
        Box::pin(async move {
            let store = self.store()?;
            let ids: Vec<EventId> = selection
                .resolve(&store)
                .map_err(anyhow::Error::msg)?
                .iter()
                .map(|r| r.id)
                .collect();
            let out = match action {
                DlqAction::Replay => crate::engine::replay(&store, None, &ids).await?,
                DlqAction::Purge => crate::engine::purge(&store, &ids).await?,
                DlqAction::Compensate => bail!(
                    "no host is running: a compensation is queued by the host that runs its pipeline; start weft, then run this again"
                ),
            };
            audit_local(
                store.as_ref(),
                &format!("dlq-{}", action.as_str()),
                "",
                format!("{} event(s)", ids.len()),
            );
            Ok(out)
        })
    }

    fn set_paused(&self, pipeline: String, paused: bool) -> AdminFuture<'_, ()> {
        Box::pin(async move {
            let config = self
                .config
                .as_ref()
                .context("no host is running and no config file was found")?;
            if config.pipeline(&pipeline).is_none() {
                bail!("unknown pipeline {pipeline:?}");
            }
            let store = self.store()?;
            store
                .set_paused(&pipeline, paused.then_some("paused by hand"))
                .await?;
            let action = if paused { "pause" } else { "resume" };
            audit_local(store.as_ref(), action, &pipeline, "done".into());
            Ok(())
        })
    }

    fn erase(
        &self,
        request: crate::engine::EraseRequest,
    ) -> AdminFuture<'_, crate::engine::Erasure> {
        Box::pin(async move {
            if let Some(p) = &request.emit {
                bail!(
                    "no host is running: the erasure request cannot be sent into {p:?}; start weft, or leave out --emit"
                );
            }
            let config = self.config()?;
            let store = self.store()?;
            let pointers = config.subject_pointers(&request.subject);
            let result =
                crate::engine::erase(&store, &pointers, &request.subject, &request.value).await;
            let detail = match &result {
                Ok(e) => format!(
                    "subject {}: {} events in the history and {} dead letters erased, {} still queued (the value is not recorded)",
                    e.subject, e.history, e.dead_letters, e.queued_left
                ),
                Err(why) => format!("subject {}: failed: {why}", request.subject),
            };
            audit_local(store.as_ref(), "erase", "", detail);
            result.map_err(anyhow::Error::msg)
        })
    }

    fn credentials(&self) -> AdminFuture<'_, Vec<crate::sandbox::oauth::CredentialStatus>> {
        Box::pin(async move {
            let config = self.config()?;
            let mut list = crate::sandbox::oauth::secret_statuses(config);
            for (name, o) in &config.oauth {
                list.push(crate::sandbox::oauth::CredentialStatus {
                    name: name.clone(),
                    kind: "oauth".into(),
                    token_url: Some(o.token_url.clone()),
                    scopes: o.scopes.clone(),
                    state: "host not running (tokens are held in memory only)".into(),
                    used_by: config
                        .grants
                        .iter()
                        .filter(|(_, g)| g.credentials.iter().any(|c| c.name == *name))
                        .map(|(p, _)| p.clone())
                        .collect(),
                    ..Default::default()
                });
            }
            Ok(list)
        })
    }

    fn encryption(&self) -> AdminFuture<'_, crate::store::Encryption> {
        Box::pin(async move {
            let store = self.store()?;
            let status = store.encryption();
            store.close();
            Ok(status)
        })
    }

    fn reencrypt(&self) -> AdminFuture<'_, crate::store::Reencrypted> {
        Box::pin(async move {
            let store = self.store()?;
            let result = store.reencrypt().await;
            let detail = match &result {
                Ok(r) => crate::server::api::reencrypted_detail(r),
                Err(e) => format!("failed: {e}"),
            };
            audit_local(store.as_ref(), "reencrypt", "", detail);
            store.close();
            Ok(result?)
        })
    }

    fn purge_queued(&self, pipeline: String) -> AdminFuture<'_, usize> {
        Box::pin(async move {
            let config = self.config()?;
            let configured: Vec<String> = config.pipelines.iter().map(|p| p.name.clone()).collect();
            let store = self.store()?;
            let result = crate::engine::purge_queued(&store, &pipeline, &configured).await;
            let detail = match &result {
                Ok(n) => format!("{n} queued events deleted"),
                Err(e) => format!("refused: {e}"),
            };
            audit_local(store.as_ref(), "purge-queued", &pipeline, detail);
            result.map_err(anyhow::Error::msg)
        })
    }

    fn pipelines(&self) -> AdminFuture<'_, Vec<PipelineStatus>> {
        // What the store holds: paused, queued (and since when), dead
        // letters. Counters since start live in a running host only.
        Box::pin(async move {
            let config = self.config()?;
            let store = self.store()?;
            let now = crate::store::now_ms();
            let mut list: Vec<PipelineStatus> = config
                .pipelines
                .iter()
                .map(|p| PipelineStatus {
                    name: p.name.clone(),
                    paused: store.is_paused(&p.name),
                    pause_reason: store.pause_reason(&p.name),
                    catalog: p.catalog(),
                    route_of: p.route_of.as_ref().map(|r| r.parent.clone()),
                    routes: p
                        .sinks
                        .iter()
                        .map(|r| crate::config::route_pipeline(&p.name, &r.name))
                        .collect(),
                    breaker: "-".into(),
                    lifetime: store
                        .totals(&p.name)
                        .and_then(|t| serde_json::from_str(&t).ok())
                        .unwrap_or_default(),
                    ..Default::default()
                })
                .collect();
            let find = |list: &mut Vec<PipelineStatus>, name: &str| {
                list.iter_mut().position(|s| s.name == name)
            };
            for entry in store.queue()? {
                let Some(r) = store.event(&entry.id)? else {
                    continue;
                };
                if let Some(i) = find(&mut list, &r.pipeline) {
                    let s = &mut list[i];
                    s.queued += 1;
                    s.queued_bytes += r.payload.len() as u64;
                    s.oldest_age_ms = s.oldest_age_ms.max(now.saturating_sub(r.received_at_ms));
                }
            }
            for (pipeline, n) in store.dead_letter_counts() {
                if let Some(i) = find(&mut list, &pipeline) {
                    list[i].dead_letters = n;
                }
            }
            Ok(list)
        })
    }

    fn usage(&self) -> AdminFuture<'_, crate::engine::Usage> {
        // Nothing is in memory; the store is measured now.
        Box::pin(async move {
            let store = self.store()?;
            Ok(crate::engine::Usage {
                store: store.usage(),
                ..Default::default()
            })
        })
    }

    fn runs(&self, q: RunQuery) -> AdminFuture<'_, Vec<RunSummary>> {
        Box::pin(async move {
            let redaction = self.redaction();
            let store = self.store()?;
            crate::engine::run_history(
                &store,
                q.pipeline.as_deref(),
                q.state.as_deref(),
                q.since.as_deref(),
                q.limit,
                &redaction,
            )
            .map_err(anyhow::Error::msg)
        })
    }

    fn event(&self, id: EventId) -> AdminFuture<'_, EventView> {
        Box::pin(async move {
            let redaction = self.redaction();
            let store = self.store()?;
            let record = store
                .event(&id)?
                .with_context(|| format!("no event {id}"))?;
            Ok(EventView::from(redaction.record(&record).as_ref()))
        })
    }
}
