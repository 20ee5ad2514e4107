//! `weft`: the workflow-automation host and its command line.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weft_host::client::{ClientError, HostClient};
use weft_host::config::Config;
use weft_host::engine::{DeadLetterView, Selection, dead_letter_views, purge, replay};
use weft_host::host::RunningHost;
use weft_host::store::{EventId, Store};

/// weft — durable webhook pipelines with sandboxed WebAssembly plugins.
///
/// Events arrive at POST /hooks/{pipeline}, are stored durably, run through
/// the pipeline's transform plugins and are delivered by its sink plugin,
/// with retries, backoff and a dead-letter queue.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the host: load plugins, build pipelines, serve webhooks and the admin API.
    Run(RunArgs),
    /// Check a config file and the plugins it names, without serving.
    Check(ConfigArg),
    /// Send a JSON file to a pipeline of a running host, as a webhook would.
    Send(SendArgs),
    /// Inspect, replay and purge the dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Pause, resume and inspect pipelines.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Show the history of events.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Look inside plugin files.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// For every plugin in the config's plugin directory: digest, world,
    /// requested capabilities, the grant, what it may do, and every mismatch.
    /// Exits with status 1 when the host would refuse a plugin.
    Audit {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show and verify the hash-chained audit log (capability denials).
    #[command(subcommand, name = "audit-log")]
    AuditLog(AuditLogCommand),
}

#[derive(Debug, Subcommand)]
enum AuditLogCommand {
    /// Print the records (stop the host first: the store is locked while it runs).
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// Start at this index.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain; names the first bad record and exits with 1.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Print a plugin file's digest, world, what it says about itself, and
    /// every interface it imports (its requested capabilities) and exports.
    Inspect {
        /// The `.wasm` file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The config file.
    #[arg(short, long, default_value = "weft.toml", env = "WEFT_CONFIG")]
    config: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Listen on this address instead of server.listen.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Keep data in this directory instead of server.data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Args)]
struct HostArg {
    #[command(flatten)]
    config: ConfigArg,
    /// Address of the running host (default: server.listen from the config).
    #[arg(long)]
    url: Option<String>,
}

#[derive(Debug, Args)]
struct SendArgs {
    /// Pipeline to send to.
    pipeline: String,
    /// JSON file to send, or `-` for standard input.
    file: PathBuf,
    /// Treat the input as newline-delimited JSON and send each line as one event.
    #[arg(long)]
    ndjson: bool,
    /// Idempotency-Key header to send (single events only).
    #[arg(long)]
    key: Option<String>,
    #[command(flatten)]
    host: HostArg,
}

#[derive(Debug, Args)]
struct SelectArgs {
    /// Event ids.
    ids: Vec<String>,
    /// Every dead letter (narrowed by --pipeline and --since).
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// Only this pipeline.
    #[arg(long)]
    pipeline: Option<String>,
    /// Only those dead-lettered since a time (2026-11-22T10:00:00Z) or a duration ago (2h).
    #[arg(long)]
    since: Option<String>,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead letters with their last error.
    List {
        /// Only this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only those dead-lettered since a time or a duration ago (2h).
        #[arg(long)]
        since: Option<String>,
        /// Print JSON (with every attempt and the payload).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        host: HostArg,
    },
    /// Show one dead letter: every attempt, the error and the payload.
    Show {
        /// Event id.
        id: String,
        #[command(flatten)]
        host: HostArg,
    },
    /// Put dead letters back in their pipeline with the same idempotency key.
    Replay {
        #[command(flatten)]
        select: SelectArgs,
        #[command(flatten)]
        host: HostArg,
    },
    /// Delete dead letters for good.
    Purge {
        #[command(flatten)]
        select: SelectArgs,
        #[command(flatten)]
        host: HostArg,
    },
}

#[derive(Debug, Subcommand)]
enum PipelineCommand {
    /// Stop delivering (events are still accepted); survives a restart.
    Pause {
        /// Pipeline name.
        name: String,
        #[command(flatten)]
        host: HostArg,
    },
    /// Deliver again.
    Resume {
        /// Pipeline name.
        name: String,
        #[command(flatten)]
        host: HostArg,
    },
    /// Counters, queue depth, breaker state and pause state of the pipelines.
    Status {
        /// Only this pipeline.
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        host: HostArg,
    },
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// List events, newest first: state, attempts, time spent, last outcome.
    List {
        /// Only this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only this state: queued, delivered, filtered, dead-lettered.
        #[arg(long)]
        state: Option<String>,
        /// Only events accepted since (RFC 3339, or an age such as `2h`).
        #[arg(long)]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        host: HostArg,
    },
    /// Show one event: state, every attempt with each step's time, fuel and
    /// memory, and the payload.
    Show {
        /// Event id.
        id: String,
        #[command(flatten)]
        host: HostArg,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Command::Run(r) => r.log_format,
        _ => LogFormat::Text,
    };
    init_logging(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    weft_host::logging::init(match format {
        LogFormat::Text => weft_host::logging::LogFormat::Text,
        LogFormat::Json => weft_host::logging::LogFormat::Json,
    });
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Check(args) => check(&args.config).await,
        Command::Send(args) => send(args).await,
        Command::Dlq(DlqCommand::List {
            pipeline,
            since,
            json,
            host,
        }) => dlq_list(&host, pipeline, since, json).await,
        Command::Dlq(DlqCommand::Show { id, host }) => runs_show(&host, &id).await,
        Command::Dlq(DlqCommand::Replay { select, host }) => dlq_act(&host, "replay", select).await,
        Command::Dlq(DlqCommand::Purge { select, host }) => dlq_act(&host, "purge", select).await,
        Command::Pipeline(PipelineCommand::Pause { name, host }) => {
            pipeline_set(&host, &name, true).await
        }
        Command::Pipeline(PipelineCommand::Resume { name, host }) => {
            pipeline_set(&host, &name, false).await
        }
        Command::Pipeline(PipelineCommand::Status { name, json, host }) => {
            pipeline_status(&host, name, json).await
        }
        Command::Runs(RunsCommand::Show { id, host }) => runs_show(&host, &id).await,
        Command::Runs(RunsCommand::List {
            pipeline,
            state,
            since,
            limit,
            json,
            host,
        }) => runs_list(&host, pipeline, state, since, limit, json).await,
        Command::Plugin(PluginCommand::Inspect { file, json }) => plugin_inspect(&file, json).await,
        Command::Audit { config, json } => audit(&config.config, json).await,
        Command::AuditLog(AuditLogCommand::Show { config, from, json }) => {
            audit_log_show(&config.config, from, json)
        }
        Command::AuditLog(AuditLogCommand::Verify { config }) => audit_log_verify(&config.config),
    }
}

fn load_config(path: &Path) -> Result<Config> {
    Ok(Config::load(path)?)
}

async fn run(args: RunArgs) -> Result<()> {
    let mut config = load_config(&args.config.config)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.server.data_dir = dir;
    }
    let host = RunningHost::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests in progress and flushing the store");
    host.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn check(path: &Path) -> Result<()> {
    let config = load_config(path)?;
    let secrets = weft_host::secrets::Secrets::load(&config).map_err(anyhow::Error::msg)?;
    let scratch = Scratch::new(4096, Some(secrets))?;
    let (plugins, errors) = weft_host::host::load_plugins(&config, &scratch.sandbox, None).await?;
    for e in errors.values() {
        eprintln!("warning: {e}");
    }
    let engine = weft_host::engine::Engine::build(
        &config,
        scratch.store.clone(),
        scratch.sandbox.clone(),
        &plugins,
        &errors,
    )
    .await?;
    weft_host::trigger::Triggers::build(
        &config,
        &engine,
        scratch.sandbox.secrets(),
        &plugins,
        &errors,
    )
    .await?;
    println!(
        "{}: ok ({} pipelines, {} plugins)",
        path.display(),
        config.pipelines.len(),
        plugins.len()
    );
    Ok(())
}

async fn plugin_inspect(file: &Path, as_json: bool) -> Result<()> {
    let scratch = Scratch::new(64, None)?;
    let report =
        weft_host::inspect::inspect(&scratch.sandbox, file, file.display().to_string(), None).await;
    if report.refused() && report.sha256.is_none() {
        bail!("{}", report.status.trim_start_matches("refused: "));
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", weft_host::inspect::render(&report));
    }
    Ok(())
}

async fn audit(path: &Path, as_json: bool) -> Result<()> {
    let config = load_config(path)?;
    let max_memory = config
        .grants
        .values()
        .map(|g| g.memory_mib)
        .max()
        .unwrap_or(64)
        .max(64);
    let scratch = Scratch::new(max_memory, None)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    let reports = weft_host::inspect::audit(&scratch.sandbox, &config, base)
        .await
        .map_err(anyhow::Error::msg)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for (i, r) in reports.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print!("{}", weft_host::inspect::render(r));
        }
    }
    let refused: Vec<&str> = reports
        .iter()
        .filter(|r| r.refused())
        .map(|r| r.name.as_str())
        .collect();
    if !refused.is_empty() {
        bail!("the host would not load: {}", refused.join(", "));
    }
    Ok(())
}

fn audit_store(path: &Path) -> Result<Arc<dyn Store>> {
    let config = load_config(path)?;
    Ok(weft_host::store::open(&config.server.data_dir)?)
}

fn audit_log_show(path: &Path, from: u64, as_json: bool) -> Result<()> {
    let store = audit_store(path)?;
    for r in store.audit().records(from)? {
        if as_json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            let at = humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.at_ms),
            );
            println!(
                "{:>6}  {at}  {:<6} {:<16} {:<12} {:<10} {}",
                r.index,
                r.kind,
                r.actor,
                if r.pipeline.is_empty() {
                    "-"
                } else {
                    &r.pipeline
                },
                r.action,
                r.detail
            );
        }
    }
    Ok(())
}

fn audit_log_verify(path: &Path) -> Result<()> {
    let store = audit_store(path)?;
    match store.audit().verify() {
        Ok(n) => {
            println!("audit log intact: {n} records, hash chain verified");
            Ok(())
        }
        Err(b) => bail!("audit log broken at record {}: {}", b.index, b.reason),
    }
}

/// A sandbox over a throw-away store, for commands that load plugins
/// without running a host. Fields drop in order: the directory goes last.
struct Scratch {
    sandbox: std::sync::Arc<weft_host::sandbox::Sandbox>,
    store: std::sync::Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl Scratch {
    /// With `secrets`, webhook verifiers and credentials are built from
    /// them as the host would.
    fn new(max_memory_mib: u32, secrets: Option<weft_host::secrets::Secrets>) -> Result<Scratch> {
        let dir = tempfile::tempdir().context("creating a scratch directory")?;
        let store = weft_host::store::open(dir.path())?;
        let mut sandbox = weft_host::sandbox::Sandbox::new(store.clone(), 16, max_memory_mib)?;
        if let Some(secrets) = secrets {
            sandbox = sandbox.with_secrets(std::sync::Arc::new(secrets));
        }
        let sandbox = std::sync::Arc::new(sandbox);
        Ok(Scratch {
            sandbox,
            store,
            _dir: dir,
        })
    }
}

fn client(host: &HostArg) -> Result<(HostClient, Option<Config>)> {
    let config = load_config(&host.config.config);
    let url = match (&host.url, &config) {
        (Some(url), _) => url.clone(),
        (None, Ok(c)) => format!("http://{}", c.server.listen),
        (None, Err(e)) => bail!("{e}\n(pass --url to reach a host without a config file)"),
    };
    let token_env = config
        .as_ref()
        .map(|c| c.server.admin_token_env.clone())
        .unwrap_or_else(|_| "WEFT_ADMIN_TOKEN".into());
    let token = std::env::var(token_env).ok().filter(|t| !t.is_empty());
    Ok((HostClient::new(&url, token), config.ok()))
}

async fn send(args: SendArgs) -> Result<()> {
    let (client, _) = client(&args.host)?;
    let mut input = Vec::new();
    if args.file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut input)?;
    } else {
        input = std::fs::read(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?;
    }
    let bodies: Vec<Vec<u8>> = if args.ndjson {
        input
            .split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(<[u8]>::to_vec)
            .collect()
    } else {
        vec![input]
    };
    let path = format!("/hooks/{}", args.pipeline);
    let mut failed = 0;
    for body in bodies {
        let headers: Vec<(&str, String)> = args
            .key
            .iter()
            .map(|k| ("idempotency-key", k.clone()))
            .collect();
        let reply = client
            .call(hyper::Method::POST, &path, Some(body), &headers)
            .await
            .map_err(not_running_hint)?;
        println!("{} {}", reply.status, reply.body);
        if reply.status >= 400 {
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} event(s) were not accepted");
    }
    Ok(())
}

fn not_running_hint(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::NotRunning(url) => anyhow::anyhow!(
            "no weft host answers at {url}; start one with `weft run`, or pass --url"
        ),
        other => other.into(),
    }
}

/// Open the store directly when no host is running.
fn offline_store(config: Option<Config>) -> Result<Arc<dyn Store>> {
    let config = config
        .context("no host is running and no config file was found to open its data directory")?;
    let store = weft_host::store::open(&config.server.data_dir)?;
    Ok(store)
}

async fn dlq_list(
    host: &HostArg,
    pipeline: Option<String>,
    since: Option<String>,
    as_json: bool,
) -> Result<()> {
    let (client, config) = client(host)?;
    let mut query = Vec::new();
    if let Some(p) = &pipeline {
        query.push(format!("pipeline={p}"));
    }
    if let Some(s) = &since {
        query.push(format!(
            "since={}",
            s.replace(':', "%3A").replace('+', "%2B")
        ));
    }
    let path = if query.is_empty() {
        "/api/v1/dlq".to_string()
    } else {
        format!("/api/v1/dlq?{}", query.join("&"))
    };
    let list: Vec<DeadLetterView> = match client.call(hyper::Method::GET, &path, None, &[]).await {
        Ok(reply) if reply.status == 200 => {
            serde_json::from_value(reply.body["dead_letters"].clone())
                .map_err(|e| anyhow::anyhow!("unexpected answer from the host: {e}"))?
        }
        Ok(reply) => bail!("the host answered {}: {}", reply.status, reply.body),
        Err(ClientError::NotRunning(_)) => {
            let redaction = redaction_of(&config);
            let store = offline_store(config)?;
            dead_letter_views(&store, pipeline.as_deref(), since.as_deref(), &redaction)
                .map_err(anyhow::Error::msg)?
        }
        Err(e) => return Err(e.into()),
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("the dead-letter queue is empty");
        return Ok(());
    }
    println!(
        "{:<36}  {:<12}  {:>8}  {:<22}  ERROR",
        "ID", "PIPELINE", "ATTEMPTS", "FAILED IN"
    );
    for d in &list {
        let mut error = format!("{}: {}", d.error_kind, d.error);
        if error.chars().count() > 100 {
            error = error.chars().take(99).collect::<String>() + "…";
        }
        println!(
            "{:<36}  {:<12}  {:>8}  {:<22}  {error}",
            d.id, d.pipeline, d.attempts, d.failed_step
        );
    }
    println!(
        "{} dead letter(s); `weft dlq replay ID` or `weft dlq replay --all` requeues them",
        list.len()
    );
    Ok(())
}

async fn dlq_act(host: &HostArg, action: &str, select: SelectArgs) -> Result<()> {
    let (client, config) = client(host)?;
    let selection = Selection {
        ids: select.ids,
        all: select.all,
        pipeline: select.pipeline,
        since: select.since,
    };
    let body = serde_json::json!({
        "ids": selection.ids, "all": selection.all,
        "pipeline": selection.pipeline, "since": selection.since,
    });
    let outcomes = match client
        .call(
            hyper::Method::POST,
            &format!("/api/v1/dlq/{action}"),
            Some(body.to_string().into_bytes()),
            &[],
        )
        .await
    {
        Ok(reply) if reply.status == 200 => reply.body["results"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        Ok(reply) => bail!(
            "the host answered {}: {}",
            reply.status,
            reply.body["error"]
        ),
        Err(ClientError::NotRunning(_)) => {
            let store = offline_store(config)?;
            let ids: Vec<EventId> = selection
                .resolve(&store)
                .map_err(anyhow::Error::msg)?
                .iter()
                .map(|r| r.id)
                .collect();
            let out = if action == "replay" {
                println!(
                    "no host is running: the events are requeued in the store and will be delivered when `weft run` starts"
                );
                replay(&store, None, &ids).await?
            } else {
                purge(&store, &ids).await?
            };
            audit_local(
                store.as_ref(),
                &format!("dlq-{action}"),
                "",
                format!("{} event(s)", ids.len()),
            );
            out.iter()
                .map(|o| serde_json::to_value(o).unwrap_or_default())
                .collect()
        }
        Err(e) => return Err(e.into()),
    };
    let done_word = if action == "replay" {
        "requeued"
    } else {
        "purged"
    };
    let mut skipped = 0;
    for o in &outcomes {
        let result = o["result"].as_str().unwrap_or("?");
        if result != done_word {
            skipped += 1;
        }
        println!("{}  {result}", o["id"].as_str().unwrap_or("?"));
    }
    println!(
        "{} {done_word}, {skipped} skipped",
        outcomes.len() - skipped
    );
    Ok(())
}

async fn pipeline_set(host: &HostArg, name: &str, pause: bool) -> Result<()> {
    let (client, config) = client(host)?;
    let action = if pause { "pause" } else { "resume" };
    match client
        .call(
            hyper::Method::POST,
            &format!("/api/v1/pipelines/{name}/{action}"),
            None,
            &[],
        )
        .await
    {
        Ok(reply) if reply.status == 200 => {
            println!(
                "pipeline {name}: {}",
                if pause { "paused" } else { "resumed" }
            );
            Ok(())
        }
        Ok(reply) => bail!(
            "the host answered {}: {}",
            reply.status,
            reply.body["error"]
        ),
        Err(ClientError::NotRunning(_)) => {
            let config = config.context("no host is running and no config file was found")?;
            if config.pipeline(name).is_none() {
                bail!("unknown pipeline {name:?}");
            }
            let store = weft_host::store::open(&config.server.data_dir)?;
            store.set_paused(name, pause).await?;
            audit_local(store.as_ref(), action, name, "done".into());
            println!(
                "pipeline {name}: {} (no host is running; it takes effect when `weft run` starts)",
                if pause { "paused" } else { "resumed" }
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The fields the config's pipelines hide (none without a config).
fn redaction_of(config: &Option<Config>) -> weft_host::redact::FieldRedaction {
    config
        .as_ref()
        .map(|c| weft_host::redact::FieldRedaction::new(c.redact_lists()))
        .unwrap_or_default()
}

/// Record a change made on the store directly (no host running) in the
/// audit log, under the local user's name.
fn audit_local(store: &dyn Store, action: &str, pipeline: &str, detail: String) {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    if let Err(e) = store.audit().append(weft_host::store::AuditEntry {
        kind: "admin",
        actor: format!("local:{user}"),
        pipeline: pipeline.to_string(),
        action: action.to_string(),
        detail,
    }) {
        eprintln!("warning: could not write the audit log: {e}");
    }
}

async fn pipeline_status(host: &HostArg, name: Option<String>, as_json: bool) -> Result<()> {
    let (client, _) = client(host)?;
    let reply = client
        .call(hyper::Method::GET, "/api/v1/pipelines", None, &[])
        .await
        .map_err(not_running_hint)?;
    if reply.status != 200 {
        bail!(
            "the host answered {}: {}",
            reply.status,
            reply.body["error"]
        );
    }
    let list: Vec<serde_json::Value> = reply.body["pipelines"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| name.as_deref().is_none_or(|n| p["name"] == n))
        .collect();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<14} {:<7} {:<9} {:>7} {:>8} {:>9} {:>9} {:>9} {:>8} {:>6} {:>9}  RECONCILED",
        "PIPELINE",
        "STATE",
        "BREAKER",
        "QUEUED",
        "OLDEST",
        "ACCEPTED",
        "DELIVERED",
        "FILTERED",
        "RETRIED",
        "DEAD",
        "IN FLIGHT"
    );
    let mut unbalanced = Vec::new();
    for p in &list {
        let n = |k: &str| p[k].as_u64().unwrap_or(0);
        let unaccounted = p["unaccounted"].as_i64().unwrap_or(0);
        let oldest = match n("oldest_age_ms") {
            0 => "-".to_string(),
            ms => humantime::format_duration(
                std::time::Duration::from_secs(ms / 1000).max(std::time::Duration::from_secs(1)),
            )
            .to_string(),
        };
        let name = p["name"].as_str().unwrap_or("?");
        println!(
            "{:<14} {:<7} {:<9} {:>7} {:>8} {:>9} {:>9} {:>9} {:>8} {:>6} {:>9}  {}",
            name,
            if p["paused"] == true {
                "paused"
            } else {
                "running"
            },
            p["breaker"].as_str().unwrap_or("?"),
            n("queued"),
            oldest,
            n("accepted") + n("recovered") + n("replayed"),
            n("delivered"),
            n("filtered"),
            n("retried"),
            n("dead_lettered"),
            n("in_flight"),
            if unaccounted == 0 {
                "yes".to_string()
            } else {
                format!("NO ({unaccounted} unaccounted)")
            }
        );
        if unaccounted != 0 {
            unbalanced.push(name.to_string());
        }
    }
    println!(
        "ACCEPTED counts events accepted, recovered at start and replayed since start; it equals DELIVERED + FILTERED + DEAD + QUEUED when nothing was lost."
    );
    if !unbalanced.is_empty() {
        bail!(
            "events unaccounted for in {}; see the log for events that went missing",
            unbalanced.join(", ")
        );
    }
    Ok(())
}

async fn runs_list(
    host: &HostArg,
    pipeline: Option<String>,
    state: Option<String>,
    since: Option<String>,
    limit: usize,
    as_json: bool,
) -> Result<()> {
    let (client, config) = client(host)?;
    let mut query = vec![format!("limit={limit}")];
    for (k, v) in [
        ("pipeline", &pipeline),
        ("state", &state),
        ("since", &since),
    ] {
        if let Some(v) = v {
            query.push(format!("{k}={v}"));
        }
    }
    let path = format!("/api/v1/events?{}", query.join("&"));
    let list: Vec<weft_host::engine::RunSummary> = match client
        .call(hyper::Method::GET, &path, None, &[])
        .await
    {
        Ok(reply) if reply.status == 200 => serde_json::from_value(reply.body["events"].clone())
            .map_err(|e| anyhow::anyhow!("unexpected answer from the host: {e}"))?,
        Ok(reply) => bail!(
            "the host answered {}: {}",
            reply.status,
            reply.body["error"]
        ),
        Err(ClientError::NotRunning(_)) => {
            let redaction = redaction_of(&config);
            let store = offline_store(config)?;
            weft_host::engine::run_history(
                &store,
                pipeline.as_deref(),
                state.as_deref(),
                since.as_deref(),
                limit,
                &redaction,
            )
            .map_err(anyhow::Error::msg)?
        }
        Err(e) => return Err(e.into()),
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<36}  {:<12} {:<13} {:<24} {:>8} {:>9}  LAST",
        "ID", "PIPELINE", "STATE", "RECEIVED", "ATTEMPTS", "BUSY MS"
    );
    for r in &list {
        let last: String = r.last.chars().take(60).collect();
        println!(
            "{:<36}  {:<12} {:<13} {:<24} {:>8} {:>9.1}  {last}",
            r.id, r.pipeline, r.state, r.received_at, r.attempts, r.busy_ms
        );
    }
    Ok(())
}

async fn runs_show(host: &HostArg, id: &str) -> Result<()> {
    let (client, config) = client(host)?;
    let id: EventId = id.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let view = match client
        .call(
            hyper::Method::GET,
            &format!("/api/v1/events/{id}"),
            None,
            &[],
        )
        .await
    {
        Ok(reply) if reply.status == 200 => reply.body,
        Ok(reply) => bail!("the host answered {}: {}", reply.status, reply.body),
        Err(ClientError::NotRunning(_)) => {
            let redaction = redaction_of(&config);
            let store = offline_store(config)?;
            let record = store
                .event(&id)?
                .with_context(|| format!("no event {id}"))?;
            weft_host::server::api::event_view(&redaction.record(&record))
        }
        Err(e) => return Err(e.into()),
    };
    println!("{}", serde_json::to_string_pretty(&view)?);
    Ok(())
}
