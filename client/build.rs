//! Generates the wire protocol's Rust types and tonic service from `proto/silica.proto`. Unless
//! `PROTOC` names one, it uses the protoc that `protoc-bin-vendored` ships, so the default build
//! needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    // Arguments, results and keys are postcard bodies: `Bytes` fields decode without a copy.
    config.bytes([
        ".silica.v1.Envelope.args",
        ".silica.v1.Response.ok",
        ".silica.v1.GrainId.key",
    ]);
    tonic_prost_build::configure()
        .emit_rerun_if_changed(true)
        .compile_with_config(config, &["proto/silica.proto"], &["proto"])?;
    Ok(())
}
