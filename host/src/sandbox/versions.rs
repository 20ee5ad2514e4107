//! Versions side by side: which loaded plugin a step's `plugin = "…"`
//! names. The name rules are in [`crate::config::version`].

use super::{LoadFailures, Plugin, Plugins};
use crate::config::version::{base, fits, may_name, parse, version_part};
use std::sync::Arc;

fn version_of(p: &Plugin) -> semver::Version {
    parse(p.version.as_deref())
}

/// The loaded plugin `spec` names: the newest version that fits (a file
/// with the version in its name wins a tie with one without). `None` when
/// nothing fits.
pub fn resolve<'a>(plugins: &'a Plugins, spec: &str) -> Option<&'a Arc<Plugin>> {
    let (name, wanted) = (base(spec), version_part(spec));
    plugins
        .iter()
        .filter(|(stem, _)| base(stem) == name)
        .filter(|(_, p)| wanted.is_none_or(|w| fits(&version_of(p), w)))
        .max_by(|(a_stem, a), (b_stem, b)| {
            version_of(a).cmp(&version_of(b)).then(
                version_part(a_stem)
                    .is_some()
                    .cmp(&version_part(b_stem).is_some()),
            )
        })
        .map(|(_, p)| p)
}

/// The files that failed to load and might have been the one `spec` names:
/// a step must not quietly run an older version because a newer file is
/// broken.
pub fn failed_candidates<'a>(failures: &'a LoadFailures, spec: &str) -> Vec<(&'a str, &'a str)> {
    failures
        .iter()
        .filter(|(stem, _)| may_name(spec, stem))
        .map(|(s, why)| (s.as_str(), why.as_str()))
        .collect()
}

/// The loaded versions of `spec`'s plugin, for a message:
/// `1.3.0 (json-map@1.3.0.wasm), 2.0.0 (json-map.wasm)`.
pub fn loaded_versions(plugins: &Plugins, spec: &str) -> String {
    let mut found: Vec<(semver::Version, String)> = plugins
        .iter()
        .filter(|(stem, _)| base(stem) == base(spec))
        .map(|(stem, p)| (version_of(p), format!("{} ({stem}.wasm)", version_of(p))))
        .collect();
    found.sort();
    if found.is_empty() {
        return "none".into();
    }
    found
        .into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The plugin `spec` names, or why none can run: a file that might be it
/// failed to load, no file has its name, or no loaded version fits.
/// `dir` is the plugin directory, for the message.
pub fn find(
    plugins: &Plugins,
    failures: &LoadFailures,
    spec: &str,
    dir: &std::path::Path,
) -> Result<Arc<Plugin>, String> {
    if let Some((stem, why)) = failed_candidates(failures, spec).first() {
        return Err(if *stem == spec {
            format!("plugin {spec:?} failed to load: {why}")
        } else {
            format!("plugin {spec:?}: {stem}.wasm, one of its versions, failed to load: {why}")
        });
    }
    if let Some(p) = resolve(plugins, spec) {
        return Ok(p.clone());
    }
    let name = base(spec);
    if plugins.keys().any(|stem| base(stem) == name) {
        return Err(format!(
            "plugin {spec:?}: no loaded version fits; loaded: {}",
            loaded_versions(plugins, spec)
        ));
    }
    let wanted = dir.join(format!("{name}.wasm"));
    let alt = dir.join(format!("{}.wasm", name.replace('-', "_")));
    let hint = if alt != wanted && alt.exists() {
        format!("; found {}, rename it to {name}.wasm", alt.display())
    } else {
        String::new()
    };
    Err(format!(
        "plugin {spec:?} not found: looked for {} (or {name}@VERSION.wasm){hint}",
        wanted.display()
    ))
}
