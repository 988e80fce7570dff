//! The shared library answers to the name C programs were linked with:
//! `DT_SONAME` is `liblockfile.so.1`, so that the dynamic loader accepts it
//! in place of Debian's liblockfile (ABI 1).
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,liblockfile.so.1");
    println!("cargo:rerun-if-changed=build.rs");
}
