//! Connecting to the cluster and opening (or making) an installation's
//! buckets and audit stream; registering this host as alive.

use super::*;

/// A bucket, made when missing (with the replicas asked for). Its stream
/// is made here as a key-value bucket's is, which servers from 2.9 on take.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    max_age: Duration,
    max_value_size: i32,
) -> Result<kv::Store, String> {
    use jetstream::stream::{Config, DiscardPolicy, StorageType};
    js.get_or_create_stream(Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        max_message_size: max_value_size,
        storage: StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        discard: DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot make bucket {name}: {e}"))?;
    js.get_key_value(name)
        .await
        .map_err(|e| format!("cannot open bucket {name}: {e}"))
}

/// Connect and open (or make) the buckets and the audit stream.
async fn setup(
    opts: &JetStreamOptions,
    keys: Keyring,
    host: String,
) -> Result<(Shared, String, String), String> {
    let options = match (&opts.user, &opts.secret) {
        (Some(u), Some(p)) => {
            async_nats::ConnectOptions::with_user_and_password(u.clone(), p.clone())
        }
        (None, Some(t)) => async_nats::ConnectOptions::with_token(t.clone()),
        _ => async_nats::ConnectOptions::new(),
    }
    .name("weft-store")
    .connection_timeout(opts.timeout);
    let seeds: Vec<String> = opts.url.split(',').map(|s| s.trim().to_string()).collect();
    let client = tokio::time::timeout(opts.timeout * 2, options.connect(seeds))
        .await
        .map_err(|_| "no server of the cluster answered".to_string())?
        .map_err(|e| e.to_string())?;
    let max_payload = client.server_info().max_payload;
    // A payload, its record and the envelope must fit in one message.
    if max_payload < opts.max_body_bytes + 64 * 1024 {
        return Err(format!(
            "the NATS servers take messages of up to {max_payload} bytes, less than server.max_body_bytes ({}) and 64 KiB for the record; raise max_payload in the servers' config or lower server.max_body_bytes",
            opts.max_body_bytes
        ));
    }
    let js = jetstream::ContextBuilder::new()
        .timeout(opts.timeout)
        .build(client);
    let p = &opts.prefix;
    let r = opts.replicas;
    let names = Names {
        prefix: p.clone(),
        order: format!("{p}-order"),
        events: format!("{p}-events"),
        dead: format!("{p}-dead"),
        dedup: format!("{p}-dedup"),
        kv: format!("{p}-kv"),
    };
    let events = bucket(&js, &names.events, r, Duration::ZERO, -1).await?;
    let dead = bucket(&js, &names.dead, r, Duration::ZERO, -1).await?;
    let dedup = bucket(&js, &names.dedup, r, Duration::ZERO, 1024).await?;
    let state = bucket(&js, &format!("{p}-state"), r, Duration::ZERO, -1).await?;
    let kv = bucket(&js, &names.kv, r, Duration::ZERO, -1).await?;
    let hosts = bucket(&js, &format!("{p}-hosts"), r, HOST_TTL, 1024).await?;
    let audit_stream = format!("{p}-audit");
    let audit_subject = format!("{p}.audit");
    js.get_or_create_stream(jetstream::stream::Config {
        name: audit_stream.clone(),
        subjects: vec![audit_subject.clone()],
        num_replicas: r,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot make stream {audit_stream}: {e}"))?;
    // Ordered pipelines' sequences: the holder removes what it has read.
    js.get_or_create_stream(jetstream::stream::Config {
        name: names.order.clone(),
        subjects: vec![format!("{p}.order.>")],
        num_replicas: r,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot make stream {}: {e}", names.order))?;
    Ok::<_, String>((
        Shared {
            js,
            events,
            dead,
            dedup,
            state,
            kv,
            hosts,
            names,
            keys,
            index_key: opts.audit_key,
            host: host.clone(),
            owned: Mutex::new(HashMap::new()),
            sequenced: Mutex::new(HashMap::new()),
            failing: Mutex::new(None),
            writes: std::sync::atomic::AtomicU64::new(0),
            closed: AtomicBool::new(false),
            flushes: Default::default(),
            timeout: opts.timeout,
        },
        audit_stream,
        audit_subject,
    ))
}

impl JetStreamStore {
    /// Connect to the cluster and open (or make) the installation's
    /// buckets and audit stream; encrypted with `keys` when they seal.
    pub fn open(o: JetStreamOptions, keys: Keyring) -> Result<JetStreamStore, StoreError> {
        let location = format!(
            "jetstream {} (prefix {}, {} replicas)",
            o.url, o.prefix, o.replicas
        );
        let fail = |reason: String| StoreError::Open {
            dir: std::path::PathBuf::from(&location),
            reason,
        };
        let call = Arc::new(Caller::new().map_err(|e| fail(e.to_string()))?);
        let host = format!(
            "{}-{}",
            o.host_name
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            crate::store::EventId::new()
        );
        let opts = o.clone();
        let shared = call
            .wait(async move {
                // A cluster that is still electing its leaders refuses for
                // a moment: try again for a while before giving up.
                let started = Instant::now();
                loop {
                    match setup(&opts, keys.clone(), host.clone()).await {
                        Ok(done) => break Ok(done),
                        Err(e)
                            if started.elapsed() < opts.timeout * 6
                                && !e.contains("max_payload") =>
                        {
                            tracing::warn!(
                                "the JetStream store is not ready yet ({e}); trying again"
                            );
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => break Err(e),
                    }
                }
            })
            .map_err(fail)?;
        let (shared, audit_stream, audit_subject) = shared;
        let s = Arc::new(shared);
        // Alive from now on: renewed until the store closes.
        call.wait({
            let s = s.clone();
            async move { s.hosts.put(&s.host, s.host.clone().into()).await }
        })
        .map_err(|e| fail(format!("cannot register this host: {e}")))?;
        call.spawn({
            let s = s.clone();
            async move {
                while !s.closed.load(Ordering::SeqCst) {
                    tokio::time::sleep(HOST_BEAT).await;
                    if let Err(e) = s.hosts.put(&s.host, s.host.clone().into()).await {
                        tracing::warn!("could not renew this host's liveness in the store: {e}");
                    }
                }
                let _ = s.hosts.purge(&s.host).await;
            }
        });
        let audit = JsAuditLog {
            js: s.js.clone(),
            stream: audit_stream,
            subject: audit_subject,
            key: o.audit_key,
            call: call.clone(),
        };
        let alarms = match audit.verify() {
            Ok(_) => Vec::new(),
            Err(b) => vec![format!(
                "the audit log in {location} is not intact at record {}: {}. Keep the stream as evidence; `weft audit-log verify` shows this again",
                b.index, b.reason
            )],
        };
        Ok(JetStreamStore {
            s,
            call,
            audit,
            location,
            alarms,
            snapshot: Mutex::new(None),
            seen: Mutex::new((BTreeSet::new(), None)),
            host_name: o.host_name,
            pauses: Mutex::new(HashMap::new()),
        })
    }
}
