//! The documentation stays true: the README's example configuration is a
//! valid system configuration, and `daqctl config` round-trips it.

use daq_format::config::SystemConfig;
use daq_tests::{daqctl, daqctl_ok};

fn readme_toml() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let len = readme[start..].find("```").expect("closed block");
    readme[start..start + len].to_string()
}

#[test]
fn readme_example_config_is_valid_and_checked_by_daqctl() {
    let text = readme_toml();
    let c = SystemConfig::from_toml(&text, "README.md").expect("valid");
    assert_eq!(c.generator.throttle_us, 100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("readme.toml");
    std::fs::write(&path, &text).expect("write");
    let out = daqctl_ok(&["config", "--check", path.to_str().expect("utf-8")]);
    let effective =
        SystemConfig::from_toml(&out, "stdout").expect("daqctl prints a valid configuration");
    assert_eq!(effective, c);
    let default = daqctl(&["config"]).expect("runs");
    let d = SystemConfig::from_toml(&String::from_utf8_lossy(&default.stdout), "stdout")
        .expect("valid");
    assert_eq!(d, SystemConfig::default());
}
