//! Generates the tonic/prost code from `proto/daq.proto` with the vendored protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded at this point.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("PROTOC", protoc);
        }
    }
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&["proto/daq.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/daq.proto");
    Ok(())
}
