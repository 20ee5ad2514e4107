//! Build facts for `weft --version` and the `weft_build_info` metric: the
//! git revision the binary was built from, when there is one.

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let rev = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
    let rev = if dirty && rev != "unknown" {
        format!("{rev}-modified")
    } else {
        rev
    };
    println!("cargo:rustc-env=WEFT_GIT_REV={rev}");
    println!(
        "cargo:rustc-env=WEFT_BUILD_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_default()
    );
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = root.join(dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", dir.join("index").display());
    }
}
