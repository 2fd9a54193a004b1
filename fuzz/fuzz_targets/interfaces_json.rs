//! Azure Stack's interfaces file: any content parses or is rejected with code 104.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = cni::ipam::interfaces_json::parse(data) {
        assert_eq!(e.code(), 104);
    }
});
