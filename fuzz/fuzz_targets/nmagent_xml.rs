//! The host agent's XML: any answer parses or is rejected with code 104; parses round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use cni::ipam::nmagent;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match nmagent::parse(text) {
        Ok(nics) => assert_eq!(nmagent::parse(&nmagent::render(&nics)).unwrap(), nics),
        Err(e) => assert_eq!(e.code(), 104),
    }
});
