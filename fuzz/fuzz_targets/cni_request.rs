//! The skeleton over arbitrary stdin and CNI_ARGS: always a result or a well-formed error object.
#![no_main]
use std::collections::HashMap;

use cni::skel::result::CniResult;
use cni::skel::{dispatch, Attachment, Plugin, Request};
use libfuzzer_sys::fuzz_target;

struct Nothing;

impl Plugin for Nothing {
    fn add(&self, _: &Request) -> cni::skel::error::Result<CniResult> {
        Ok(CniResult::default())
    }
    fn del(&self, _: &Request) -> cni::skel::error::Result<()> {
        Ok(())
    }
    fn check(&self, _: &Request) -> cni::skel::error::Result<()> {
        Ok(())
    }
    fn status(&self, _: &Request) -> cni::skel::error::Result<()> {
        Ok(())
    }
    fn gc(&self, _: &Request, _: &[Attachment]) -> cni::skel::error::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let (args, stdin) = data.split_at(data.iter().position(|b| *b == 0).unwrap_or(0));
    let commands = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"];
    let command = commands[args.first().copied().unwrap_or(0) as usize % commands.len()];
    let vars: HashMap<String, String> = [
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", "c1".into()),
        ("CNI_NETNS", "/var/run/netns/x".into()),
        ("CNI_IFNAME", "eth0".into()),
        ("CNI_PATH", "/opt/cni/bin".into()),
        ("CNI_ARGS", String::from_utf8_lossy(args.get(1..).unwrap_or_default()).into_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let out = dispatch(&vars, stdin, &Nothing);
    if out.exit_code != 0 {
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("error output is JSON");
        assert!(v["code"].as_u64().is_some() && v["msg"].is_string());
    }
});
