//! Test kit for weft: the wasm plugins built for the tests, a recording HTTP
//! receiver, config files for a host under test, and small helpers. The
//! end-to-end tests in `tests/`, the benchmarks in `benches/` and the
//! quickstart all use it.

pub mod brokers;
pub mod browser;
pub mod oauth;
pub mod paged_api;
pub mod receiver;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Paths of the plugins built for `wasm32-wasip2` by this crate's build script.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}

pub mod certs;
pub use receiver::{Behavior, Delivery, Receiver};

/// Copy every built plugin into `dir` under its plugin name (`json-map.wasm`, …).
pub fn install_plugins(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, path) in plugins::ALL {
        std::fs::copy(path, dir.join(format!("{name}.wasm")))?;
    }
    Ok(())
}

/// A pipeline for a host under test.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// Name.
    pub name: String,
    /// Sink URL.
    pub sink_url: String,
    /// `retry = { … }` inline table body.
    pub retry: String,
    /// Extra lines inside the `[[pipeline]]` table.
    pub extra: String,
    /// Steps as TOML inline tables.
    pub steps: Vec<String>,
    /// Extra keys of the http-sink config (e.g. `timeout_ms = 300`).
    pub sink_extra: String,
    /// Extra keys of the sink table itself (e.g. `batch = { … }`).
    pub sink_table: String,
}

impl PipelineSpec {
    /// The quickstart's lead pipeline: json-map, filter, http-sink to `sink_url`.
    pub fn leads(name: &str, sink_url: &str) -> Self {
        PipelineSpec {
            name: name.to_string(),
            sink_url: sink_url.to_string(),
            retry: "max_attempts = 5, initial_ms = 20, max_ms = 200".into(),
            extra: String::new(),
            steps: vec![
                r#"{ plugin = "json-map", config = { lowercase = ["/email"], title_case = ["/name"], date = [{ field = "/created", from = "%m/%d/%Y", to = "%Y-%m-%d" }], cents_to_decimal = ["/amount_cents"] } }"#.into(),
                r#"{ plugin = "filter", config = { require = ["/email"] } }"#.into(),
            ],
            sink_extra: String::new(),
            sink_table: String::new(),
        }
    }

    /// Batch deliveries: `batch = { <table> }` on the sink.
    pub fn sink_batch(mut self, table: &str) -> Self {
        self.sink_table = format!(", batch = {{ {table} }}");
        self
    }

    /// No steps: events reach the sink as they were accepted.
    pub fn without_steps(mut self) -> Self {
        self.steps.clear();
        self
    }

    /// Add keys to the http-sink config.
    pub fn sink_config(mut self, extra: &str) -> Self {
        self.sink_extra = format!(", {extra}");
        self
    }

    /// Replace the retry table body.
    pub fn retry(mut self, retry: &str) -> Self {
        self.retry = retry.to_string();
        self
    }

    /// Add a line (e.g. `concurrency = 4`) to the pipeline table.
    pub fn with(mut self, line: &str) -> Self {
        self.extra.push_str(line);
        self.extra.push('\n');
        self
    }
}

/// A `weft.toml` for a host under test, with the plugins installed beside it.
pub struct HostSetup {
    /// Temporary directory holding config, plugins and data.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config_path: PathBuf,
}

impl HostSetup {
    /// Write config and plugins for `pipelines`, listening on `listen`.
    pub fn new(listen: SocketAddr, pipelines: &[PipelineSpec]) -> std::io::Result<HostSetup> {
        Self::with_extra(listen, pipelines, "")
    }

    /// One quickstart lead pipeline named `leads` delivering to `sink_url`.
    pub fn leads(listen: SocketAddr, sink_url: &str) -> std::io::Result<HostSetup> {
        Self::new(listen, &[PipelineSpec::leads("leads", sink_url)])
    }

    /// Like [`HostSetup::new`], with extra top-level TOML (such as grants).
    pub fn with_extra(
        listen: SocketAddr,
        pipelines: &[PipelineSpec],
        extra: &str,
    ) -> std::io::Result<HostSetup> {
        let dir = tempfile::tempdir()?;
        install_plugins(&dir.path().join("plugins.d"))?;
        let mut origins: Vec<String> = pipelines.iter().map(|p| origin_of(&p.sink_url)).collect();
        origins.sort();
        origins.dedup();
        // A real port gets a free admin port of its own; port 0 lets the
        // host pick both.
        let admin = if listen.port() == 0 {
            String::new()
        } else {
            format!("admin_listen = \"{}\"\n", free_addr())
        };
        let mut toml = format!(
            "[server]\nlisten = \"{listen}\"\ndata_dir = \"./weft-data\"\n{admin}\n[plugins]\ndir = \"./plugins.d\"\n\n[grants.http-sink]\nhttp = [{}]\n\n{extra}\n",
            origins
                .iter()
                .map(|o| format!("{o:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for p in pipelines {
            toml.push_str(&format!(
                "[[pipeline]]\nname = \"{}\"\nidempotency_key = \"/id\"\nsteps = [\n  {}\n]\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{}\"{} }}{} }}\nretry = {{ {} }}\n{}\n",
                p.name,
                p.steps.join(",\n  "),
                p.sink_url,
                p.sink_extra,
                p.sink_table,
                p.retry,
                p.extra
            ));
        }
        if let Some(store) = shared_store(extra) {
            toml.push_str(&store);
        }
        let config_path = dir.path().join("weft.toml");
        std::fs::write(&config_path, toml)?;
        Ok(HostSetup { dir, config_path })
    }

    /// Write `NAME = "value"` secrets to `secrets.toml` (mode 0600) beside
    /// the config and point `server.secrets_file` at it.
    pub fn with_secrets(self, secrets: &[(&str, &str)]) -> std::io::Result<HostSetup> {
        let file = self.dir.path().join("secrets.toml");
        let lines: String = secrets
            .iter()
            .map(|(name, value)| format!("{name} = {value:?}\n"))
            .collect();
        std::fs::write(&file, lines)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
        self.server_line("secrets_file = \"secrets.toml\"")
    }

    /// Add a line (e.g. `keep_history_events = 3`) to the `[server]` table.
    pub fn server_line(self, line: &str) -> std::io::Result<HostSetup> {
        let text = std::fs::read_to_string(&self.config_path)?;
        let anchor = "data_dir = \"./weft-data\"\n";
        std::fs::write(
            &self.config_path,
            text.replacen(anchor, &format!("{anchor}{line}\n"), 1),
        )?;
        Ok(self)
    }

    /// The data directory the config names.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("weft-data")
    }

    /// Parse the config as the host would.
    pub fn config(&self) -> weft_host::config::Config {
        log_if_asked();
        weft_host::config::Config::load(&self.config_path).expect("test config is valid")
    }
}

/// With `WEFT_TEST_LOG` set (a filter such as `weft_host=debug`), the
/// hosts a test runs in its own process log to its output: what a test
/// that failed or took long was doing.
fn log_if_asked() {
    if let Ok(filter) = std::env::var("WEFT_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// With `WEFT_TEST_JETSTREAM` set to a NATS URL (`cargo xtask
/// test-jetstream` sets it, and the audit key in
/// `WEFT_SECRET_WEFT_TEST_AUDIT`), every host under test runs on a
/// JetStream store of its own on that server instead of sled: the same
/// tests, on the other backend. `None` otherwise, or when the test names
/// its own store.
fn shared_store(extra: &str) -> Option<String> {
    let url = std::env::var("WEFT_TEST_JETSTREAM").ok()?;
    if extra.contains("[store]") {
        return None;
    }
    let prefix = format!("t{:016x}", rand_u64());
    Some(format!(
        "\n[store]\nbackend = \"jetstream\"\nurl = \"{url}\"\nprefix = \"{prefix}\"\naudit_key = \"WEFT_TEST_AUDIT\"\n"
    ))
}

/// A random number, for names that must not collide between tests.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Serve HTTP/1.1 on `listener` until the task is aborted: each request
/// is answered by `answer(state, request)`.
pub fn serve<S, F, Fut>(
    listener: tokio::net::TcpListener,
    state: std::sync::Arc<S>,
    answer: F,
) -> tokio::task::JoinHandle<()>
where
    S: Send + Sync + 'static,
    F: Fn(std::sync::Arc<S>, hyper::Request<hyper::body::Incoming>) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<
            Output = Result<
                hyper::Response<http_body_util::Full<bytes::Bytes>>,
                std::convert::Infallible,
            >,
        > + Send
        + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (state, answer) = (state.clone(), answer.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(state.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Percent-decoding (`%41` is `A`; anything else is kept as it is).
pub fn percent_decode(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(h) = text.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(h, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `scheme://host:port` of a URL.
pub fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

/// A free port on 127.0.0.1 (bound and released; fine for tests that then
/// bind it at once).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

/// A sample lead with the given id; `n` varies the content.
pub fn lead(id: &str, n: usize) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "email": format!("Person.{n}@Example.COM"),
        "name": format!("pERSON number{n}"),
        "created": "03/11/2026",
        "amount_cents": 1000 + n as i64,
    })
}

/// Poll `check` every 20 ms until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `127.0.0.1:0`: let the host pick a free port.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// POST a JSON event to `pipeline` of an in-process host.
pub async fn send_event(
    host: &weft_host::host::RunningHost,
    pipeline: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let url = format!("http://{}/hooks/{pipeline}", host.addr);
    post_json(&url, body.to_string().as_bytes(), "application/json").await
}

/// A receiver behaving as `behavior`, and an in-process host with the
/// quickstart's `leads` pipeline delivering to it (ports picked freely).
pub async fn leads_host(behavior: Behavior) -> (Receiver, HostSetup, weft_host::host::RunningHost) {
    let receiver = Receiver::start(behavior).await;
    let setup = HostSetup::new(
        any_port(),
        &[PipelineSpec::leads("leads", &receiver.url("/x"))],
    )
    .expect("host setup");
    let host = weft_host::host::RunningHost::start(setup.config())
        .await
        .expect("host starts");
    (receiver, setup, host)
}

/// Call the admin API (or `/metrics`) of an in-process host without a
/// token (its loopback listener needs none): the answer's body, JSON, or a
/// string for text.
pub async fn admin_call(
    host: &weft_host::host::RunningHost,
    method: hyper::Method,
    path: &str,
) -> serde_json::Value {
    weft_host::client::HostClient::new(&format!("http://{}", host.admin_addr), None)
        .call(method, path, None, &[])
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .body
}

/// POST a JSON event to `pipeline` of the host listening on `addr`.
pub async fn post_event(
    addr: SocketAddr,
    pipeline: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let url = format!("http://{addr}/hooks/{pipeline}");
    post_json(&url, body.to_string().as_bytes(), "application/json").await
}

/// Start `weft run --config CONFIG` from `binary`, wait until it listens on
/// `listen`, and return the child and how long it took. Its log goes to
/// `log_name` beside the config.
pub fn spawn_weft(
    binary: &str,
    config: &Path,
    listen: SocketAddr,
    log_name: &str,
) -> (std::process::Child, Duration) {
    spawn_weft_with(binary, config, listen, log_name, &[])
}

/// [`spawn_weft`] with extra arguments to `weft run` (e.g. `--log-format json`).
pub fn spawn_weft_with(
    binary: &str,
    config: &Path,
    listen: SocketAddr,
    log_name: &str,
    extra: &[&str],
) -> (std::process::Child, Duration) {
    spawn_weft_env(binary, config, listen, log_name, extra, &[])
}

/// [`spawn_weft_with`] with extra environment variables (secrets).
pub fn spawn_weft_env(
    binary: &str,
    config: &Path,
    listen: SocketAddr,
    log_name: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, Duration) {
    let log = std::fs::File::create(config.with_file_name(log_name)).expect("log file");
    let started = Instant::now();
    let child = std::process::Command::new(binary)
        .args(["run", "--config"])
        .arg(config)
        .args(extra)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("weft starts");
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "weft did not start listening on {listen}; see {log_name} beside the config"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, started.elapsed())
}

/// A `weft run` process, killed when dropped.
pub struct WeftProcess {
    child: std::process::Child,
}

impl WeftProcess {
    /// Start `binary run --config CONFIG EXTRA…`, logging to `log_name`
    /// beside the config, and wait until it listens.
    pub fn start(
        binary: &str,
        config: &Path,
        listen: SocketAddr,
        log_name: &str,
        extra: &[&str],
    ) -> WeftProcess {
        Self::start_with_env(binary, config, listen, log_name, extra, &[])
    }

    /// [`WeftProcess::start`] with extra environment variables (secrets).
    pub fn start_with_env(
        binary: &str,
        config: &Path,
        listen: SocketAddr,
        log_name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> WeftProcess {
        let (child, _) = spawn_weft_env(binary, config, listen, log_name, extra, env);
        WeftProcess { child }
    }

    /// Its resident memory now, in bytes (from `/proc`).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// CPU time it has used so far (user and system), from `/proc`.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // The fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let per_second = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(100.0);
        // utime and stime: fields 14 and 15 of the line, 12 and 13 here.
        (ticks(11) + ticks(12)) / per_second
    }

    /// Send it a signal by name (`HUP`, …) and go on.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name}");
    }

    /// Kill it with SIGKILL.
    pub fn sigkill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// Stop it with SIGTERM and check it exits cleanly.
    pub fn sigterm(mut self) {
        std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "weft exits cleanly on SIGTERM: {status}");
    }
}

impl Drop for WeftProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POST a JSON body to `url`, returning status and parsed body.
pub async fn post_json(url: &str, body: &[u8], content_type: &str) -> (u16, serde_json::Value) {
    post_with_headers(url, body, content_type, &[]).await
}

/// [`post_json`] with extra request headers (signatures and the like).
pub async fn post_with_headers(
    url: &str,
    body: &[u8],
    content_type: &str,
    headers: &[(&str, String)],
) -> (u16, serde_json::Value) {
    try_post_with_headers(url, body, content_type, headers)
        .await
        .expect("the host answers")
}

/// [`post_with_headers`], with `Err` when no answer came (a host that is
/// down or went down meanwhile).
pub async fn try_post_with_headers(
    url: &str,
    body: &[u8],
    content_type: &str,
    headers: &[(&str, String)],
) -> Result<(u16, serde_json::Value), String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut req = hyper::Request::post(url).header("content-type", content_type);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
            body,
        )))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    use http_body_util::BodyExt;
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((status, value))
}

/// GET `url`: the status and the body as text (status 0 and the error
/// when nothing answers).
pub async fn get_text(url: &str) -> (u16, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: hyper::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return (0, e.to_string()),
    };
    match client.get(uri).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            use http_body_util::BodyExt;
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            (status, body)
        }
        Err(e) => (0, e.to_string()),
    }
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` for histograms).
    pub name: String,
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Parse the Prometheus text exposition format strictly: every sample must
/// belong to a family declared by `# TYPE`, names and labels must be valid,
/// label values correctly escaped, values numbers, and each histogram's
/// buckets cumulative up to a `+Inf` bucket equal to its `_count`.
pub fn parse_metrics(text: &str) -> Result<Vec<Sample>, String> {
    use std::collections::{BTreeMap, HashMap};
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = |m: &str| format!("line {}: {m}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !valid_name(name)
                        || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                    {
                        return Err(at("bad TYPE"));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(at("family declared twice"));
                    }
                }
                (Some("HELP"), Some(name), _) if valid_name(name) => {}
                _ => return Err(at("bad comment")),
            }
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').ok_or_else(|| at("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| at("value is not a number"))?,
        };
        let (name, labels) = match name_labels.split_once('{') {
            None => (name_labels, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| at("unclosed labels"))?;
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    if !valid_name(&key) || chars.next() != Some('"') {
                        return Err(at("bad label"));
                    }
                    let mut val = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => match chars.next() {
                                Some('n') => val.push('\n'),
                                Some(c @ ('\\' | '"')) => val.push(c),
                                _ => return Err(at("bad escape")),
                            },
                            Some('"') => break,
                            Some(c) => val.push(c),
                            None => return Err(at("unterminated label value")),
                        }
                    }
                    labels.insert(key, val);
                    match chars.next() {
                        Some(',') | None => {}
                        _ => return Err(at("expected , between labels")),
                    }
                }
                (name, labels)
            }
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(at("sample of an undeclared family"));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histograms: cumulative buckets ending in +Inf == _count.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let le = s
                .labels
                .get("le")
                .ok_or(format!("{family}: bucket without le"))?;
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("{family}: bad le {le}"))?
            };
            let mut rest = s.labels.clone();
            rest.remove("le");
            series
                .entry(format!("{rest:?}"))
                .or_default()
                .push((le, s.value));
        }
        for (labels, buckets) in series {
            if buckets
                .windows(2)
                .any(|w| w[1].0 <= w[0].0 || w[1].1 < w[0].1)
            {
                return Err(format!("{family}{labels}: buckets not cumulative"));
            }
            let inf = buckets.last().filter(|b| b.0.is_infinite()).map(|b| b.1);
            let count = samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count") && format!("{:?}", s.labels) == labels
                })
                .map(|s| s.value);
            if inf.is_none() || inf != count {
                return Err(format!(
                    "{family}{labels}: +Inf bucket {inf:?} != count {count:?}"
                ));
            }
        }
    }
    Ok(samples)
}

/// The value of the sample `name` whose labels include `labels`.
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// Copy a directory tree, as someone restoring or rolling back by hand would.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
