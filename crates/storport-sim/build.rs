//! Builds the C shim that defines the variadic storport.sys exports.
fn main() {
    println!("cargo:rerun-if-changed=src/shim.c");
    cc::Build::new()
        .file("src/shim.c")
        .warnings(true)
        .compile("storport_sim_shim");
}
