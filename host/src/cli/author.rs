//! The connector author's kit: `weft plugin new` (a crate for one world,
//! with a working example and tests), `weft plugin build` (to
//! `wasm32-wasip2`, named after the plugin) and `weft plugin call` (one
//! event or poll through the real sandbox).

use super::scratch::Scratch;
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A plugin's world, as `plugin new` makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum WorldArg {
    /// Events in, events out (map, filter, split).
    Transform,
    /// Delivers events to another system.
    Sink,
    /// Polls another system for new items.
    Source,
}

impl WorldArg {
    fn as_str(self) -> &'static str {
        match self {
            WorldArg::Transform => "transform",
            WorldArg::Sink => "sink",
            WorldArg::Source => "source",
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct NewArgs {
    /// The plugin's name, as a weft.toml names it: lower case, digits and `-`.
    name: String,
    /// Its world.
    #[arg(long, value_enum)]
    world: WorldArg,
    /// Where to make it (default: ./NAME); must be new or empty.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The weft-sdk crate to build against (default: the one this weft was
    /// built from, when it is on this machine).
    #[arg(long, env = "WEFT_SDK")]
    sdk: Option<PathBuf>,
    /// Depend on weft-sdk from this git repository instead of a path.
    #[arg(long, conflicts_with = "sdk")]
    sdk_git: Option<String>,
}

/// The files of a cases template: each starts at a line `@@ NAME`.
fn cases(template: &str) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = Vec::new();
    for line in template.lines() {
        if let Some(name) = line.strip_prefix("@@ ") {
            out.push((Path::new("fixtures").join(name.trim()), String::new()));
        } else if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

/// The SDK this binary was built with, if its source is still here.
fn default_sdk() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    dir.join("Cargo.toml")
        .exists()
        .then(|| dir.canonicalize().ok())
        .flatten()
}

fn valid_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

impl NewArgs {
    pub(super) fn run(self) -> Result<()> {
        let name = &self.name;
        if !valid_name(name) {
            bail!(
                "{name:?} cannot be a plugin name: use lower-case letters, digits and `-`, starting with a letter (e.g. currency-convert)"
            );
        }
        let dir = self.dir.clone().unwrap_or_else(|| PathBuf::from(name));
        if dir.exists()
            && std::fs::read_dir(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .next()
                .is_some()
        {
            bail!(
                "{} is not empty; pick a new directory with --dir",
                dir.display()
            );
        }
        let (sdk_dep, lock) = match (&self.sdk, &self.sdk_git) {
            (_, Some(git)) => (format!("git = {git:?}"), None),
            (Some(path), None) => {
                let path = path
                    .canonicalize()
                    .with_context(|| format!("the SDK at {}", path.display()))?;
                (
                    format!("path = {:?}", path.display().to_string()),
                    Some(path),
                )
            }
            (None, None) => match default_sdk() {
                Some(path) => (
                    format!("path = {:?}", path.display().to_string()),
                    Some(path),
                ),
                None => bail!(
                    "no weft-sdk found on this machine; pass --sdk PATH (a weft checkout's sdk directory) or --sdk-git URL"
                ),
            },
        };
        if let Some(sdk) = &lock
            && !sdk.join("Cargo.toml").exists()
        {
            bail!(
                "{} holds no Cargo.toml; --sdk names the weft-sdk crate's directory",
                sdk.display()
            );
        }
        let world = self.world.as_str();
        let fill = |template: &str| {
            template
                .replace("{{name}}", name)
                .replace("{{crate}}", name)
                .replace("{{world}}", world)
                .replace("{{sdk}}", &sdk_dep)
                .replace(
                    "{{call_input}}",
                    match self.world {
                        WorldArg::Source => "--poll",
                        _ => "--event fixtures/event.json",
                    },
                )
                .replace(
                    "{{grant_note}}",
                    match self.world {
                        WorldArg::Transform => "",
                        _ => "\nIt reaches the world only within its grant: give `plugin call` one with\n`--grant 'http = [\"https://api.example.com\"]'` (and `--secret NAME=VALUE`\nfor a credential), as an operator's weft.toml would.\n",
                    },
                )
        };
        let lib = match self.world {
            WorldArg::Transform => include_str!("../../templates/transform.rs.txt"),
            WorldArg::Sink => include_str!("../../templates/sink.rs.txt"),
            WorldArg::Source => include_str!("../../templates/source.rs.txt"),
        };
        let (config, event) = match self.world {
            WorldArg::Transform => (
                r#"{ "field": "/amount", "rate": 0.92, "to": "/amount_eur" }"#,
                Some(r#"{ "id": "order-1", "amount": 19.99 }"#),
            ),
            WorldArg::Sink => (
                r#"{ "url": "http://127.0.0.1:9090/chat" }"#,
                Some(r#"{ "text": "deploy finished" }"#),
            ),
            WorldArg::Source => (r#"{ "url": "http://127.0.0.1:9090/items" }"#, None),
        };
        let files: Vec<(PathBuf, String)> = [
            (
                PathBuf::from("Cargo.toml"),
                fill(include_str!("../../templates/Cargo.toml.txt")),
            ),
            (PathBuf::from("src/lib.rs"), fill(lib)),
            (
                PathBuf::from("README.md"),
                fill(include_str!("../../templates/README.md.txt")),
            ),
            (
                PathBuf::from(".gitignore"),
                include_str!("../../templates/gitignore.txt").to_string(),
            ),
            (PathBuf::from("fixtures/config.json"), format!("{config}\n")),
        ]
        .into_iter()
        .chain(event.map(|e| (PathBuf::from("fixtures/event.json"), format!("{e}\n"))))
        .chain(cases(match self.world {
            WorldArg::Transform => include_str!("../../templates/transform.cases.txt"),
            WorldArg::Sink => include_str!("../../templates/sink.cases.txt"),
            WorldArg::Source => include_str!("../../templates/source.cases.txt"),
        }))
        .collect();
        for (path, text) in &files {
            let path = dir.join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        // The versions weft itself was built and tested with.
        if let Some(lock) = lock.and_then(|sdk| sdk.parent().map(|p| p.join("Cargo.lock")))
            && lock.exists()
        {
            std::fs::copy(&lock, dir.join("Cargo.lock"))?;
        }
        println!(
            "made the {world} plugin {name} in {}:\n  cd {}\n  cargo test                  # its logic, natively\n  weft plugin build           # target/weft/{name}.wasm\n  weft plugin test            # the cases in fixtures/*.test.toml, in the real sandbox\n  weft plugin call target/weft/{name}.wasm --config fixtures/config.json {}",
            dir.display(),
            dir.display(),
            match self.world {
                WorldArg::Source => "--poll",
                _ => "--event fixtures/event.json",
            }
        );
        Ok(())
    }
}

#[derive(Debug, Args)]
pub(super) struct BuildArgs {
    /// The plugin crate (default: the current directory).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Build with optimisations (smaller and faster; no source lines in a
    /// trap's backtrace).
    #[arg(long)]
    release: bool,
    /// Also copy the plugin into this plugin directory (a weft.toml's
    /// `[plugins] dir`), replacing the file there in one step.
    #[arg(long)]
    install: Option<PathBuf>,
}

/// What `Cargo.toml` says of a plugin crate.
struct Manifest {
    /// The package (crate) name.
    package: String,
    /// The plugin's name in weft (`[package.metadata.weft] name`).
    name: String,
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let doc: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let package = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .with_context(|| format!("{} has no [package] name", path.display()))?
        .to_string();
    let name = doc
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("weft"))
        .and_then(|w| w.get("name"))
        .and_then(|n| n.as_str())
        .map_or_else(|| package.clone(), str::to_string);
    if !valid_name(&name) {
        bail!(
            "the plugin name {name:?} (from [package.metadata.weft] name, else the package name) is not one weft accepts; set [package.metadata.weft] name = \"my-plugin\""
        );
    }
    Ok(Manifest { package, name })
}

/// The target directory of the crate in `dir`.
fn target_of(dir: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        None => dir.join("target"),
    }
}

/// Where `weft plugin build` put the plugin of the crate in `dir`.
pub(super) fn built_plugin(dir: &Path) -> Result<PathBuf> {
    let manifest = read_manifest(dir)?;
    let path = target_of(dir)
        .join("weft")
        .join(format!("{}.wasm", manifest.name));
    if !path.exists() {
        bail!(
            "{} is not built yet: run `weft plugin build` first (or pass --wasm)",
            path.display()
        );
    }
    Ok(path)
}

/// Make sure rustup has the `wasm32-wasip2` target (where rustup is used).
fn ensure_target() -> Result<()> {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(()); // no rustup: cargo says what is missing
    };
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-wasip2")
    {
        return Ok(());
    }
    eprintln!("installing the wasm32-wasip2 target (rustup target add wasm32-wasip2)");
    let status = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status()
        .context("running rustup")?;
    if !status.success() {
        bail!(
            "rustup could not add the wasm32-wasip2 target; run `rustup target add wasm32-wasip2` and build again"
        );
    }
    Ok(())
}

impl BuildArgs {
    pub(super) async fn run(self) -> Result<()> {
        let manifest = read_manifest(&self.dir)?;
        ensure_target()?;
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo
            .args([
                "build",
                "--lib",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(self.dir.join("Cargo.toml"));
        if self.release {
            cargo.arg("--release");
        }
        let status = cargo.status().context("running cargo")?;
        if !status.success() {
            bail!("cargo build failed (its errors are above)");
        }
        let target = target_of(&self.dir);
        let profile = if self.release { "release" } else { "debug" };
        let built = target
            .join("wasm32-wasip2")
            .join(profile)
            .join(format!("{}.wasm", manifest.package.replace('-', "_")));
        let bytes =
            std::fs::read(&built).with_context(|| format!("cargo built no {}", built.display()))?;
        let out_dir = target.join("weft");
        std::fs::create_dir_all(&out_dir)?;
        let out = out_dir.join(format!("{}.wasm", manifest.name));
        replace_file(&out, &bytes)?;
        let scratch = Scratch::new(64, None)?;
        let report =
            crate::inspect::inspect(&scratch.sandbox, &out, out.display().to_string(), None, &[])
                .await;
        if report.sha256.is_none() {
            bail!(
                "{} is not a plugin weft loads: {}",
                out.display(),
                report.status
            );
        }
        println!(
            "built {} ({:.1} KiB, {}, {})",
            out.display(),
            bytes.len() as f64 / 1024.0,
            report.world.as_deref().unwrap_or("?"),
            report.describes_itself_as.as_deref().unwrap_or("?")
        );
        if let Some(dir) = &self.install {
            std::fs::create_dir_all(dir)?;
            let to = dir.join(format!("{}.wasm", manifest.name));
            replace_file(&to, &bytes)?;
            println!(
                "installed as {} (a running host loads plugins at start: restart it to run this build)",
                to.display()
            );
        }
        Ok(())
    }
}

/// Write `bytes` to `path` through a new file renamed over it: a host
/// loading the directory never sees half a plugin.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}
