//! Fuzzes the config parser: TOML text through `SystemConfig::from_toml`
//! (parse and validate). An accepted config must survive `to_toml` and
//! parse back equal, and its derived sizes must not overflow.
#![no_main]

use daq_format::config::SystemConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = SystemConfig::from_toml(text, "fuzz") else {
        return;
    };
    let _ = cfg.max_fragment_bytes();
    let _ = cfg.generator_fragment_bytes();
    let again = SystemConfig::from_toml(&cfg.to_toml(), "fuzz round trip")
        .expect("an accepted config serializes to an accepted config");
    assert_eq!(again, cfg);
});
