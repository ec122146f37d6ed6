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
    // Counters and heap snapshots are both wire messages and run-record
    // types (summary.json, the heap CSV): defined once, in daq.proto, with
    // serde derived here. Missing fields read as zero (older records).
    const RECORD: &str = "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]";
    tonic_prost_build::configure()
        .bytes(".")
        .type_attribute("daq.v1.Counters", RECORD)
        .type_attribute("daq.v1.HeapSnapshot", RECORD)
        .type_attribute("daq.v1.SequenceRange", RECORD)
        .type_attribute("daq.v1.SourceRanges", RECORD)
        .compile_protos(&["proto/daq.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/daq.proto");
    Ok(())
}
