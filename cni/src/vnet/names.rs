//! Kernel object names derived from the attachment, stable across retries and bounded in length.

/// The host side of a pod's veth: `azv` + 11 hex digits of SHA-1(containerID + ifname), as
/// Azure's plugin names it (14 characters, within the kernel's 15).
pub fn host_veth(container_id: &str, ifname: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("{container_id}{ifname}")).digest().to_string();
    format!("azv{}", &digest[..11])
}

/// The bridge name when the config gives none: `azure` + the master's interface index.
pub fn default_bridge(master_index: u32) -> String {
    format!("azure{master_index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_stable_bounded_and_distinct() {
        let a = host_veth("abc", "eth0");
        assert_eq!(a, host_veth("abc", "eth0"));
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("azv") && a[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, host_veth("abc", "eth1"));
        assert_ne!(a, host_veth("abd", "eth0"));
    }
}
