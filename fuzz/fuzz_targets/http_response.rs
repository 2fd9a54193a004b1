//! Raw HTTP answers from the host agent: split or rejected, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cni::ipam::http::split_response(data);
});
