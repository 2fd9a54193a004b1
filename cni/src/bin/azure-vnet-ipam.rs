//! azure-vnet-ipam: a CNI IPAM plugin handing out the node's secondary VNet addresses.

use cni::ipam::{nic::Sysfs, IpamPlugin};

const HELP: &str = "\
azure-vnet-ipam — CNI IPAM plugin for Azure VNet addresses

A container runtime (or a network plugin such as azure-vnet or bridge) runs this program with
CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH (and optionally CNI_ARGS) set and
the network configuration as JSON on stdin. It prints a CNI result or error on stdout.

Commands: ADD, DEL, CHECK, VERSION, STATUS, GC (CNI spec 0.3.0 to 1.1.0).

Network config (the \"ipam\" section):
  \"type\": \"azure-vnet-ipam\"
  \"environment\": \"azure\" (host agent XML, default) or \"mas\" (interfaces JSON file)
  \"queryUrl\", \"interfacesFile\", \"subnet\", \"stateFile\", \"logFile\", \"logLevel\",
  \"lockTimeoutMs\", \"queryTimeoutMs\", \"refreshIntervalMs\"
Defaults: state /var/run/azure-vnet-ipam.json, log /var/log/azure-vnet-ipam.log.
Every key and error code: docs/cni-config.md

Options:
  --version   print the version and supported CNI spec versions
  --help      print this help
";

fn main() {
    let plugin = IpamPlugin::new(Box::new(Sysfs::default()));
    cni::skel::run(&plugin, "azure-vnet-ipam", HELP)
}
