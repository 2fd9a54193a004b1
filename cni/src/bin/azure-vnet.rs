//! azure-vnet: the CNI network plugin attaching pods to the node's VNet (bridge or transparent).

const HELP: &str = "\
azure-vnet — CNI network plugin for Azure VNet (bridge and transparent modes)

A container runtime runs this program with CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
CNI_PATH (and optionally CNI_ARGS) set and the network configuration as JSON on stdin. ADD puts
the pod on the VNet with an address from the IPAM plugin named in ipam.type (found in CNI_PATH),
outbound SNAT and port mappings: in bridge mode (the default) on a bridge that enslaves the
node's VNet interface (`master`), with MAC translation so the VNet only sees master's MAC; in
transparent mode routed by the node (the pod's default route is via 169.254.1.1).

Commands: ADD, DEL, CHECK, VERSION, STATUS, GC (CNI spec 0.3.0 to 1.1.0).

Example config:
  {\"cniVersion\":\"1.0.0\",\"name\":\"azure\",\"type\":\"azure-vnet\",\"mode\":\"bridge\",
   \"master\":\"eth0\",\"bridge\":\"azure0\",\"logLevel\":\"info\",
   \"ipam\":{\"type\":\"azure-vnet-ipam\",\"environment\":\"azure\"}}
Defaults: state /var/run/azure-vnet.json, log /var/log/azure-vnet.log.
Every key and error code: docs/cni-config.md

Options:
  --version   print the version and supported CNI spec versions
  --help      print this help
";

fn main() {
    // DEL leaves what the kernel is slow at to a detached copy of itself (see `reaper.rs`).
    if let Some(state_file) = std::env::var_os(cni::vnet::reaper::REAP_ENV) {
        std::process::exit(cni::vnet::reaper::run(std::path::Path::new(&state_file)));
    }
    cni::skel::run(&cni::vnet::VnetPlugin, "azure-vnet", HELP)
}
