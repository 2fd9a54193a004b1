//! azure-vnet: the CNI network plugin attaching pods to the node's VNet through a bridge.

const HELP: &str = "\
azure-vnet — CNI network plugin for Azure VNet (bridge mode)

A container runtime runs this program with CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
CNI_PATH (and optionally CNI_ARGS) set and the network configuration as JSON on stdin. ADD puts
the pod on a bridge that enslaves the node's VNet interface (`master`), with an address from the
IPAM plugin named in ipam.type (found in CNI_PATH), outbound SNAT and port mappings.

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
    cni::skel::run(&cni::vnet::VnetPlugin, "azure-vnet", HELP)
}
