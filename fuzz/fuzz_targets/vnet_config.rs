//! azure-vnet's network config and a runtime's conflist: any JSON is accepted or refused with
//! a config/decoding code, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(serde_json::Value::Object(config)) = serde_json::from_slice(data) {
        if let Err(e) = cni::vnet::config::VnetConfig::parse(&config) {
            assert_eq!(e.code(), 7, "config errors are code 7: {e}");
        }
    }
    if let Err(e) = cni::runtime::ConfList::parse(data) {
        assert!(matches!(e.code(), 6 | 7), "{e}");
    }
});
