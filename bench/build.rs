//! Records the versions the bench was built with (from the workspace's
//! `Cargo.lock` and `rustc --version`) so the tool can print them beside its
//! figures.
#![allow(
    clippy::print_stdout,
    reason = "a build script talks to cargo on stdout"
)]

use std::path::Path;
use std::process::Command;

/// The packages whose versions matter for the figures.
const PACKAGES: [&str; 6] = [
    "tokio",
    "smol",
    "async-executor",
    "hyper",
    "async-tungstenite",
    "tungstenite",
];

fn main() {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    println!("cargo:rerun-if-changed=build.rs");
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let mut found: Vec<String> = Vec::new();
    let mut name: Option<&str> = None;
    for line in text.lines() {
        if let Some(n) = quoted(line, "name = ") {
            name = Some(n);
        } else if let (Some(n), Some(v)) = (name, quoted(line, "version = ")) {
            if PACKAGES.contains(&n) {
                found.push(format!("{n} {v}"));
            }
            name = None;
        }
    }
    found.sort_by_key(|s| {
        let n = s.split(' ').next().unwrap_or_default();
        PACKAGES.iter().position(|p| *p == n)
    });
    let deps = if found.is_empty() {
        String::from("unknown (no Cargo.lock)")
    } else {
        found.join(", ")
    };
    println!("cargo:rustc-env=WEIR_BENCH_DEPS={deps}");

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| String::from("rustc"));
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| String::from("rustc (unknown)"), |s| s.trim().to_owned());
    println!("cargo:rustc-env=WEIR_BENCH_RUSTC={version}");
}

/// `"x"` in a line `PREFIX"x"`.
fn quoted<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.strip_prefix(prefix)?
        .strip_prefix('"')?
        .strip_suffix('"')
}
