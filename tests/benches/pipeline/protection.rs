//! What data protection costs: the lead pipeline with its store encrypted
//! (every payload, record and index key sealed on the way to disk and
//! opened on the way back), and with its sink calling an OAuth-protected
//! API (a token from the host's cache put on every request), against the
//! same pipeline plain, in the same run.

use super::{load, print_load};
use std::time::{Duration, Instant};
use weft_host::host::RunningHost;
use weft_tests::oauth::AuthServer;
use weft_tests::{Behavior, HostSetup, PipelineSpec, Receiver};

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Plain,
    Encrypted,
    OAuth,
}

/// One run: events delivered per second.
async fn run(name: &str, variant: Variant, events: usize, senders: usize, prefix: &str) -> f64 {
    let receiver = Receiver::start(Behavior::Accept).await;
    let auth = AuthServer::start("weft", "bench-client-secret", 3600).await;
    let url = match variant {
        Variant::OAuth => auth.url("/api/leads"),
        _ => receiver.url("/leads"),
    };
    let mut spec =
        PipelineSpec::leads("leads", &url).with("concurrency = 64\nbreaker = { enabled = false }");
    let mut extra = String::new();
    if variant == Variant::OAuth {
        spec = spec.sink_config("auth = [{ credential = \"CRM\", scheme = \"bearer\" }]");
        extra = format!(
            "credentials = [\"CRM\"]\n\n[oauth.CRM]\ntoken_url = \"{}\"\nclient_id = \"weft\"\ngrant = \"client_credentials\"\nclient_secret = \"CRM_SECRET\"\n",
            auth.url("/token")
        );
    }
    let setup = HostSetup::with_extra("127.0.0.1:0".parse().expect("addr"), &[spec], &extra)
        .expect("setup")
        .with_secrets(&[
            ("CRM_SECRET", "bench-client-secret"),
            ("STORE_KEY", &weft_host::store::seal::generate_key()),
        ])
        .expect("secrets");
    let setup = if variant == Variant::Encrypted {
        setup
            .server_line("encryption = { key = \"STORE_KEY\" }")
            .expect("encryption")
    } else {
        setup
    };
    let host = RunningHost::start(setup.config())
        .await
        .expect("host starts");
    let start = Instant::now();
    let sent = load(
        &format!("http://{}/hooks/leads", host.addr),
        events,
        senders,
        prefix,
    )
    .await;
    let delivered = || match variant {
        Variant::OAuth => auth.api_ok(),
        _ => receiver.requests().len(),
    };
    while delivered() < sent.ok && start.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = delivered() as f64 / start.elapsed().as_secs_f64();
    print_load(name, &sent, rate);
    if variant == Variant::OAuth {
        println!(
            "  token requests: {} for {} deliveries",
            auth.token_requests().len(),
            delivered()
        );
    }
    host.shutdown().await;
    rate
}

/// Best of two alternating rounds of each variant, with the ratios.
pub async fn protection(events: usize, senders: usize) {
    println!(
        "== data protection: {events} events, {senders} senders: an encrypted store and an OAuth sink against the plain pipeline =="
    );
    let best = super::best_of_two(
        &[
            ("plain", Variant::Plain),
            ("encrypted store", Variant::Encrypted),
            ("OAuth-protected sink", Variant::OAuth),
        ],
        |name, variant, prefix| async move { run(&name, variant, events, senders, &prefix).await },
    )
    .await;
    let (plain, sealed, oauth) = (best[0], best[1], best[2]);
    println!(
        "encrypted store: {sealed:.0} ev/s = {:.1}% of plain ({plain:.0} ev/s); OAuth sink: {oauth:.0} ev/s = {:.1}% of plain",
        100.0 * sealed / plain,
        100.0 * oauth / plain
    );
}
