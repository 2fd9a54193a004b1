//! What the kernel answers on the nf_tables socket (acks, errors, element dumps): any bytes are
//! parsed or refused with an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reply = cni::vnet::nft::Reply::default();
    let _ = cni::vnet::nft::parse(data, &mut reply);
});
