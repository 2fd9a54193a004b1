//! Arbitrary `ipset save` / `iptables-save` text (what `debug explain --dataplane` reads from
//! files): read back or refused, never a panic; what reads back can be evaluated.
#![no_main]
use libfuzzer_sys::fuzz_target;
use policy_compiler::compiled::evaluate;
use policy_compiler::model::Protocol;
use dataplane::iptables::readback::KernelView;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The first NUL splits the input into the two files.
    let (ipset, rules) = text.split_once('\0').unwrap_or((text, ""));
    if let Ok(view) = KernelView::read(ipset, rules) {
        let _ = view.wired(&["FORWARD", "OUTPUT"]);
        let a = "10.0.1.1".parse().unwrap();
        let b = "10.0.2.1".parse().unwrap();
        let _ = evaluate(&view.ir, a, b, Protocol::Tcp, 80);
    }
});
