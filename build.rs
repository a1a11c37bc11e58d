//! The static build (scripts/build-static.sh) sets PREFLIGHT_LINK_LAYOUT to
//! scripts/supervisor-layout.ld, a linker script that groups the code the supervisor runs: it
//! stays resident for the app's whole life, and grouped it keeps far fewer pages (see
//! scripts/profile-supervisor.py). Other builds (tests, `cargo build`) link as usual.

fn main() {
    println!("cargo:rerun-if-env-changed=PREFLIGHT_LINK_LAYOUT");
    if let Some(path) = std::env::var_os("PREFLIGHT_LINK_LAYOUT").filter(|p| !p.is_empty()) {
        let path = path.to_str().expect("PREFLIGHT_LINK_LAYOUT is not UTF-8");
        println!("cargo:rerun-if-changed={path}");
        println!("cargo:rustc-link-arg-bin=preflight=-Wl,-T,{path}");
    }
}
