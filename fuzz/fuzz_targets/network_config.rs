//! The ipam section of a network config: any JSON is accepted or rejected, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(serde_json::Value::Object(config)) = serde_json::from_slice(data) {
        if let Err(e) = cni::ipam::config::IpamConfig::from_network_config(&config) {
            assert_eq!(e.code(), 7, "config errors are code 7: {e}");
        }
    }
});
