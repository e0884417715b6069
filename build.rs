//! Two link-time choices that keep an idle `sidekick` small.
//!
//! Packed relative relocations (DT_RELR), when the C library it is built
//! against can load them (glibc 2.36 or later). A position-independent Rust
//! binary carries ~20,000 relative relocations; in the classic format the
//! loader reads 0.5 MB of them at every start, and those pages stay resident
//! for the life of the process. Packed, they take
//! 6 KB: about 0.4 MB less resident memory at idle and a smaller file. Older
//! glibc cannot load such a binary, so the flag is only used when building on
//! (and for) a new enough one; musl builds (the images) are left as they are.
//!
//! The hot-text linker script (`src/link/hot-text.ld`, release builds on
//! Linux): the ~1.5 MB of functions that starting, rendering and watching run
//! are placed together ahead of the rest of the code, so the pages an idle
//! process keeps are those, not 64 KB windows spread over 10 MB. It is layout
//! only; `SIDEKICK_HOT_TEXT=0` leaves it out (for a linker without
//! linker-script `INSERT`, such as mold).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    hot_text();
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    // Only a native glibc build: the version checked is the one linked against.
    if target != host || !target.ends_with("-linux-gnu") {
        return;
    }
    if glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Places the functions listed in `src/link/hot-text.ld` together.
fn hot_text() {
    const SCRIPT: &str = "src/link/hot-text.ld";
    println!("cargo:rerun-if-changed={SCRIPT}");
    println!("cargo:rerun-if-env-changed=SIDEKICK_HOT_TEXT");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let wanted = std::env::var("SIDEKICK_HOT_TEXT").map_or(true, |v| v != "0");
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let path = std::path::Path::new(&dir).join(SCRIPT);
    if linux && release && wanted && path.exists() {
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", path.display());
    }
}

/// Whether `getconf GNU_LIBC_VERSION` reports at least `major.minor`.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // "glibc 2.36"
    let Some(version) = text.split_whitespace().nth(1) else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}
