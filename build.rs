//! Build script: give the shared library a versioned soname on Linux, so a
//! program linked against it records `libvicpull.so.MAJOR` and keeps working
//! across compatible upgrades (scripts/install.sh installs the symlinks).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
        // Only the cdylib gets it; the staticlib and rlib have no soname.
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libvicpull.so.{major}");
    }
}
