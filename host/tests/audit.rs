//! `weft audit` on a sample plugin directory: the report matches the golden
//! file (with digests replaced), and the exit status says whether the host
//! would refuse a plugin.

use std::process::Command;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// Replace every 64-digit hex digest with `<sha256>`: digests change with
/// the toolchain and the checkout path, the rest of the report does not.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        if run.len() == 64 {
            out.push_str("<sha256>");
        } else {
            out.push_str(&run);
        }
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

#[test]
fn audit_of_a_sample_directory_matches_the_golden_file() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.d");
    weft_tests::install_plugins(&plugins).unwrap();
    std::fs::copy(weft_tests::plugins::HOSTILE, plugins.join("crm-sync.wasm")).unwrap();
    let config = dir.path().join("weft.toml");
    std::fs::write(
        &config,
        r#"
[server]
listen = "127.0.0.1:8080"
data_dir = "./data"

[plugins]
dir = "./plugins.d"

[grants.filter]
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[grants.http-sink]
http = ["https://api.example.com", "http://127.0.0.1:9090/hooks/"]
credentials = [{ name = "AUDIT_SAMPLE_TOKEN", origins = ["https://api.example.com"] }]
memory_mib = 32
timeout_ms = 5000

[grants.crm-sync]
http = ["https://*.crm.example.com"]
fuel = 50000000

[grants.ghost]
http = ["https://ghost.example.com"]

[[pipeline]]
name = "leads"
sink = { plugin = "http-sink", config = { url = "https://api.example.com/leads" } }

[[pipeline]]
name = "crm"
steps = [{ plugin = "filter" }]
sink = { plugin = "crm-sync" }
"#,
    )
    .unwrap();
    let out = Command::new(WEFT)
        .args(["audit", "--config"])
        .arg(&config)
        .env_remove("WEFT_SECRET_AUDIT_SAMPLE_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused plugins fail the audit");
    assert!(
        stderr.contains("the host would not load: crm-sync, filter"),
        "{stderr}"
    );
    let report = normalise(&String::from_utf8_lossy(&out.stdout));
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/audit.txt");
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &report).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(
        report, expected,
        "weft audit output changed; if on purpose, rerun with WEFT_UPDATE_GOLDEN=1 and review the diff"
    );

    // The JSON form carries the same facts, and the real digests.
    let out = Command::new(WEFT)
        .args(["audit", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_name = |n: &str| {
        reports
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap()
            .clone()
    };
    let sink = by_name("http-sink");
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(plugins.join("http-sink.wasm")).unwrap(),
        ))
    };
    assert_eq!(sink["sha256"], digest);
    assert_eq!(sink["status"], "loads");
    assert_eq!(
        by_name("crm-sync")["mismatches"][0]["kind"],
        "requested-not-granted"
    );
    assert_eq!(by_name("ghost")["status"], "missing");
    assert_eq!(by_name("crm-sync")["used_by"], serde_json::json!(["crm"]));
    assert_eq!(by_name("json-map")["used_by"], serde_json::json!([]));

    // Without the pipeline that names them, the refused plugins stop
    // nothing: listed as unused, and the audit passes.
    let text = std::fs::read_to_string(&config).unwrap();
    let cut = text.find("[[pipeline]]\nname = \"crm\"").unwrap();
    std::fs::write(&config, &text[..cut]).unwrap();
    let out = Command::new(WEFT)
        .args(["audit", "--config"])
        .arg(&config)
        .env("WEFT_SECRET_AUDIT_SAMPLE_TOKEN", "a-token-of-some-length")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("unused plugins (no pipeline names them): crm-sync, filter"),
        "{stdout}"
    );
}

/// A credential set nowhere stops the host from starting, so the audit that
/// says so fails too; with the credential set, the same audit passes.
#[test]
fn an_audit_that_reports_an_unset_credential_fails() {
    let dir = tempfile::tempdir().unwrap();
    weft_tests::install_plugins(&dir.path().join("plugins.d")).unwrap();
    let config = dir.path().join("weft.toml");
    std::fs::write(
        &config,
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "./data"

[plugins]
dir = "./plugins.d"

[grants.http-sink]
http = ["https://api.example.com"]
credentials = [{ name = "AUDIT_ONLY_TOKEN", origins = ["https://api.example.com"] }]

[[pipeline]]
name = "leads"
sink = { plugin = "http-sink", config = { url = "https://api.example.com/leads" } }

[[pipeline]]
name = "crm"
steps = [{ plugin = "filter" }]
sink = { plugin = "crm-sync" }
"#,
    )
    .unwrap();
    let audit = |secret: Option<&str>| {
        let mut cmd = Command::new(WEFT);
        cmd.args(["audit", "--config"])
            .arg(&config)
            .env_remove("WEFT_SECRET_AUDIT_ONLY_TOKEN");
        if let Some(s) = secret {
            cmd.env("WEFT_SECRET_AUDIT_ONLY_TOKEN", s);
        }
        cmd.output().unwrap()
    };
    let out = audit(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("would not start") && stderr.contains("AUDIT_ONLY_TOKEN (for http-sink)"),
        "{stderr}"
    );
    let out = audit(Some("a-credential-of-some-length"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
