//! Two things for the binary:
//!
//! - `PREFLIGHT_VERSION` for `--version`: the package version, and the commit when built from a
//!   git checkout (`0.1.0 (1a2b3c4d5e6f)`), so a binary copied into an image says what it is.
//! - The static build (scripts/build-static.sh) sets PREFLIGHT_LINK_LAYOUT to
//!   scripts/supervisor-layout.ld, a linker script that groups the code the supervisor runs: it
//!   stays resident for the app's whole life, and grouped it keeps far fewer pages (see
//!   scripts/profile-supervisor.py). Other builds (tests, `cargo build`) link as usual.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PREFLIGHT_LINK_LAYOUT");
    if let Some(path) = std::env::var_os("PREFLIGHT_LINK_LAYOUT").filter(|p| !p.is_empty()) {
        let path = path.to_str().expect("PREFLIGHT_LINK_LAYOUT is not UTF-8");
        println!("cargo:rerun-if-changed={path}");
        println!("cargo:rustc-link-arg-bin=preflight=-Wl,-T,{path}");
    }
    let version = env!("CARGO_PKG_VERSION");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => {
            println!("cargo:rustc-env=PREFLIGHT_VERSION={version} ({commit})");
            // A new commit moves HEAD or the branch it points at.
            if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
                println!("cargo:rerun-if-changed={dir}/HEAD");
                if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    println!("cargo:rerun-if-changed={dir}/{branch}");
                }
            }
        }
        None => println!("cargo:rustc-env=PREFLIGHT_VERSION={version}"),
    }
}
