//! What the kernel answers on an nf_tables socket (dumps of tables, chains, sets, elements and
//! rules; acks and errors): any bytes are decoded or refused with an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nfnl::object::{decode_elems, msg};
use nfnl::wire::{messages, nft_type};
use nfnl::{Chain, Rule, Set, Table};

fuzz_target!(|data: &[u8]| {
    let Ok(msgs) = messages(data) else { return };
    for m in msgs {
        let _ = m.error();
        let Ok((_, attrs)) = m.nf() else { continue };
        match m.kind {
            k if k == nft_type(msg::NEWTABLE) => drop(Table::decode(&attrs)),
            k if k == nft_type(msg::NEWCHAIN) => drop(Chain::decode(&attrs)),
            k if k == nft_type(msg::NEWSET) => drop(Set::decode(&attrs)),
            k if k == nft_type(msg::NEWSETELEM) => drop(decode_elems(&attrs)),
            _ => drop(Rule::decode(&attrs)),
        }
    }
});
