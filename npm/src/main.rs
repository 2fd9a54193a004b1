//! azure-npm: Network Policy Manager. Today: `azure-npm debug` over YAML snapshots.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use npm::agent::Agent;
use npm::cli::{DataplaneArg, Output, ProtocolArg};
use npm::dataplane::iptables;
use npm::dataplane::iptables::readback::KernelView;
use npm::dataplane::{Dataplane, KernelTrace};
use npm::debug;
use npm::source::dir::DirSource;
use policy_compiler::model::Protocol;
use policy_compiler::reach::Engine;

/// jemalloc, with its background thread purging freed pages (about 10 s after they are freed):
/// glibc's allocator kept the agent at its high-water mark after a big policy set was removed
/// again (seen: 440 MB resident after 10k policies came and went, with 7 MB before them).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "azure-npm",
    version,
    about = "Azure Network Policy Manager: Kubernetes NetworkPolicy on nftables or ipset/iptables"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: watch the source and program the kernel (nftables or ipset/iptables)
    Start {
        /// Where the cluster comes from: `kube` (in-cluster config, or --kubeconfig / KUBECONFIG)
        /// or `dir:PATH` (Kubernetes YAML files in a directory, re-read on change)
        #[arg(long)]
        source: String,
        /// kubeconfig file for `--source kube` (default: in-cluster, then KUBECONFIG, ~/.kube/config)
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// Enforce for this node's pods (the DaemonSet passes spec.nodeName through the downward
        /// API as NODE_NAME); without it every pod's rules are programmed
        #[arg(long, env = "NODE_NAME")]
        node_name: Option<String>,
        /// How often `dir:` looks for changes
        #[arg(long, default_value = "1000")]
        interval_ms: u64,
        /// How often the kernel is read back and drift repaired
        #[arg(long, env = "AZURE_NPM_VERIFY_INTERVAL_SECS", default_value = "10")]
        verify_interval_secs: u64,
        /// Prometheus /metrics, /healthz and /readyz ("off" to disable)
        #[arg(long, env = "AZURE_NPM_METRICS_ADDR", default_value = "0.0.0.0:10091")]
        metrics_addr: String,
        /// Program once and exit
        #[arg(long)]
        once: bool,
        /// What to program: nftables (the agent's own table over netlink), iptables
        /// (ipset + iptables-restore), or auto (nftables when the kernel has it, else iptables in
        /// the variant kube's chains or the iptables binary name; refuses to guess)
        #[arg(long, env = "AZURE_NPM_DATAPLANE", value_enum, default_value = "auto")]
        dataplane: DataplaneArg,
    },
    /// Remove everything the agent owns, in both backends (table inet azure-npm; the AZURE-NPM
    /// chains, their jumps and the azn- ipsets)
    Cleanup,
    /// Inspect policies offline, from a YAML snapshot of the cluster
    Debug {
        #[command(subcommand)]
        what: DebugCommand,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum EngineArg {
    Compiled,
    Semantic,
}

#[derive(Clone, Copy, ValueEnum)]
enum Target {
    Ipset,
    Iptables,
    Nftables,
    Hns,
}

#[derive(Subcommand)]
enum DebugCommand {
    /// What the compiler would program: ipset restore text, iptables-restore text, an nft script
    /// (`nft -f`), or HNS ACLs (JSON)
    Render {
        #[arg(long)]
        objects: PathBuf,
        #[arg(long, value_enum)]
        target: Target,
        /// Only this node's pods (nftables: the node's view; HNS: its endpoints); default: every pod
        #[arg(long)]
        node: Option<String>,
    },
    /// Every ordered pair of endpoints (pods, --external addresses, node InternalIPs as sources)
    Reachability {
        /// Multi-document Kubernetes YAML: Namespaces, Pods, Nodes, NetworkPolicies
        #[arg(long)]
        objects: PathBuf,
        #[arg(long, value_enum)]
        protocol: ProtocolArg,
        #[arg(long)]
        port: u16,
        /// An address outside the cluster to include as source and destination (repeatable)
        #[arg(long = "external")]
        externals: Vec<IpAddr>,
        /// compiled: walk the compiled sets and rules as the kernel would; semantic: the API's words
        #[arg(long, value_enum, default_value = "compiled")]
        engine: EngineArg,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Why one connection is allowed or denied: isolation and the deciding policies and rules
    Explain {
        #[arg(long)]
        objects: PathBuf,
        /// ns/pod or an IP address
        #[arg(long)]
        from: String,
        /// ns/pod or an IP address
        #[arg(long)]
        to: String,
        #[arg(long, value_enum)]
        protocol: ProtocolArg,
        #[arg(long)]
        port: u16,
        /// Also judge the connection by the kernel's live state: the backend's read-back
        /// (`--dataplane` alone: the one auto would choose)
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "auto")]
        dataplane: Option<DataplaneArg>,
        /// Read the kernel's state from `ipset save` output in this file (implies --dataplane)
        #[arg(long, requires = "iptables_save")]
        ipset_save: Option<PathBuf>,
        /// Read the kernel's state from `iptables-save` output in this file (implies --dataplane)
        #[arg(long, requires = "ipset_save")]
        iptables_save: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

/// The kernel's verdict, from its live state or from saved `ipset save` / `iptables-save` files.
struct KernelSource {
    live: Option<DataplaneArg>,
    ipset: Option<PathBuf>,
    iptables: Option<PathBuf>,
}

impl KernelSource {
    fn judge(self, src: IpAddr, dst: IpAddr, protocol: Protocol, port: u16) -> Result<Option<KernelTrace>> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))
        };
        Ok(match (self.ipset, self.iptables) {
            (Some(a), Some(b)) => {
                let view = KernelView::read(&read(&a)?, &read(&b)?)?;
                Some(iptables::explain(&view, src, dst, protocol, port))
            }
            _ => match self.live {
                Some(choice) => {
                    let (backend, _) = npm::backend::choose(choice.into())?;
                    Some(npm::backend::open(backend)?.explain(src, dst, protocol, port)?)
                }
                None => None,
            },
        })
    }
}

fn target_name(t: Target) -> &'static str {
    match t {
        Target::Ipset => "ipset",
        Target::Iptables => "iptables",
        Target::Nftables => "nftables",
        Target::Hns => "hns",
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    match cli.command {
        Command::Start {
            source,
            kubeconfig,
            node_name,
            interval_ms,
            verify_interval_secs,
            metrics_addr,
            once,
            dataplane,
        } => {
            if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
                tracing::warn!("freed memory is returned only as the agent allocates: {e}");
            }
            let choice = dataplane.into();
            let (backend, evidence) = npm::backend::choose(choice)?;
            tracing::info!("dataplane: {backend} (evidence: {})", evidence.describe());
            let dataplane = npm::backend::open(backend)?;
            let leftovers =
                dataplane::leftovers(backend, &evidence, Box::new(dataplane::exec::Process::default()));
            if let Some(other) = &leftovers {
                tracing::info!(
                    "the {} backend left state behind; it goes once {backend} is programmed",
                    other.name()
                );
            }
            match &node_name {
                Some(n) => tracing::info!("enforcing for the pods of node {n}"),
                None => tracing::info!("no --node-name: enforcing for every pod"),
            }
            let mut agent = Agent::new(dataplane, node_name);
            agent.leftovers = leftovers;
            agent.recheck = Some(npm::backend::recheck(choice, backend, Duration::from_secs(60)));
            let kept = npm::source::Kept::default();
            if metrics_addr != "off" {
                let addr: std::net::SocketAddr = metrics_addr
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--metrics-addr {metrics_addr}: {e}"))?;
                let handle = npm::metrics::install().map_err(anyhow::Error::msg)?;
                let name = agent.dataplane.name();
                metrics::gauge!(npm::metrics::DATAPLANE, "backend" => name).set(1.0);
                let health = npm::metrics::Health {
                    ready: agent.ready.clone(),
                    notes: agent.notes.clone(),
                    kept: kept.clone(),
                };
                let bound = npm::metrics::serve(addr, handle, health)
                    .map_err(|e| anyhow::anyhow!("serving metrics on {addr}: {e}"))?;
                tracing::info!("metrics on http://{bound}/metrics");
            }
            let (tx, rx) = std::sync::mpsc::channel();
            let _source = match source.strip_prefix("dir:") {
                Some(path) => {
                    let mut dir = DirSource::new(path.into());
                    dir.kept = kept;
                    dir.spawn(Duration::from_millis(interval_ms), tx)?
                }
                None if source == "kube" => npm::source::kube::spawn(kubeconfig, tx, kept)?,
                None => anyhow::bail!("--source {source:?}: expected kube or dir:PATH"),
            };
            if once {
                let first =
                    rx.recv().map_err(|_| anyhow::anyhow!("the source ended before its first snapshot"))?;
                agent.handle(first);
                agent.program()?;
                return Ok(());
            }
            agent.run(rx, Duration::from_secs(verify_interval_secs.max(1)));
        }
        Command::Cleanup => {
            for line in npm::backend::cleanup_all()? {
                tracing::info!("{line}");
            }
        }
        Command::Debug { what } => match what {
            DebugCommand::Render { objects, target, node } => {
                let cluster = debug::load(&objects)?;
                print!("{}", debug::render(&cluster, target_name(target), node.as_deref())?);
            }
            DebugCommand::Reachability { objects, protocol, port, externals, engine, output } => {
                let cluster = debug::load(&objects)?;
                let engine = match engine {
                    EngineArg::Compiled => Engine::Compiled,
                    EngineArg::Semantic => Engine::Semantic,
                };
                let m = debug::matrix(&cluster, &externals, protocol.into(), port, engine);
                match output {
                    Output::Json => println!("{}", serde_json::to_string_pretty(&m)?),
                    Output::Table => print!("{}", debug::matrix_table(&m)),
                }
            }
            DebugCommand::Explain {
                objects,
                from,
                to,
                protocol,
                port,
                dataplane,
                ipset_save,
                iptables_save,
                output,
            } => {
                let cluster = debug::load(&objects)?;
                let (src, dst) = (debug::endpoint(&cluster, &from)?, debug::endpoint(&cluster, &to)?);
                let mut e = debug::explain(&cluster, src, dst, protocol.into(), port);
                let kernel = KernelSource { live: dataplane, ipset: ipset_save, iptables: iptables_save };
                if kernel.live.is_some() || kernel.ipset.is_some() {
                    let (Some(a), Some(b)) = (src.ip(), dst.ip()) else {
                        anyhow::bail!("--dataplane needs addresses: {from} or {to} has none in the snapshot");
                    };
                    e.dataplane = kernel.judge(a, b, protocol.into(), port)?;
                }
                match output {
                    Output::Json => println!("{}", serde_json::to_string_pretty(&e)?),
                    Output::Table => print!("{}", debug::explanation_text(&e)),
                }
            }
        },
    }
    Ok(())
}
