//! Builds the plugins in `plugins/` for `wasm32-wasip2` once per test build,
//! into their own target directory, and hands their paths to the tests as
//! constants in `plugins.rs`.

use std::path::PathBuf;
use std::process::Command;

/// Every plugin crate the tests use: (crate name, constant name).
const PLUGINS: &[(&str, &str)] = &[
    ("json-map", "JSON_MAP"),
    ("filter", "FILTER"),
    ("http-sink", "HTTP_SINK"),
    ("http-poll", "HTTP_POLL"),
    ("queue-sink", "QUEUE_SINK"),
    ("weft-hostile", "HOSTILE"),
    ("weft-splitter", "SPLITTER"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("workspace root").to_path_buf();
    for dir in ["plugins", "sdk", "wit", "tests/hostile", "tests/splitter"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    ensure_wasm_target();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for (krate, _) in PLUGINS {
        cmd.args(["-p", krate]);
    }
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("running cargo to build the wasm plugins");
    assert!(
        status.success(),
        "building the wasm plugins failed; see the output above"
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let mut consts = String::new();
    for (krate, name) in PLUGINS {
        let file = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", krate.replace('-', "_")));
        assert!(file.exists(), "missing {}", file.display());
        consts.push_str(&format!(
            "/// Path of the `{krate}` plugin built for wasm32-wasip2.\npub const {name}: &str = {:?};\n",
            file.display().to_string()
        ));
    }
    consts.push_str(&format!(
        "/// The plugins of the lead pipeline (the quickstart): (plugin name, path).\npub const ALL: &[(&str, &str)] = &[{}];\n",
        PLUGINS
            .iter()
            .filter(|(k, _)| !["weft-hostile", "weft-splitter", "http-poll"].contains(k))
            .map(|(k, n)| format!("({k:?}, {n})"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    std::fs::write(out.join("plugins.rs"), consts).expect("writing plugins.rs");
}

/// Install the wasm target when it is missing (a fresh machine has none).
fn ensure_wasm_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip2"))
        .unwrap_or(false);
    if !installed {
        let ok = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "could not install the wasm32-wasip2 target; run `rustup target add wasm32-wasip2`"
        );
    }
}
