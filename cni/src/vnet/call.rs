//! One command's context: the parsed config, the state file, the endpoint records, the IPAM
//! delegation (in process when the IPAM binary is our own), and the test-only crash hook.

use std::path::Path;

use serde_json::Value;

use super::config::VnetConfig;
use super::delegate;
use super::kernel::RealKernel;

use super::records::Records;
use super::state::{endpoint_key, Endpoint, VnetState};
use crate::ipam::nic::Sysfs;
use crate::ipam::IpamPlugin;
use crate::logging;
use crate::skel::error::{Error, Result};
use crate::skel::{Plugin, Request};
use crate::store::Store;

/// Everything one command needs.
pub struct Call<'a> {
    pub req: &'a Request,
    pub cfg: VnetConfig,
    pub store: Store,
    pub records: Records,
    pub rt: tokio::runtime::Runtime,
    /// Every log line of the command carries its pid and attachment (calls interleave).
    _span: tracing::span::EnteredSpan,
}

impl<'a> Call<'a> {
    pub fn new(req: &'a Request) -> Result<Call<'a>> {
        let cfg = VnetConfig::parse(&req.config)?;
        logging::init(&cfg.log_file, cfg.log_level);
        let span = tracing::info_span!(
            "cni",
            pid = std::process::id(),
            cmd = ?req.env.command,
            id = %endpoint_key(&req.env.container_id, &req.env.ifname)
        )
        .entered();
        let store = Store::new(&cfg.state_file, cfg.lock_timeout);
        let records = Records::beside(&cfg.state_file);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::Io(format!("starting the async runtime: {e}")))?;
        Ok(Call { req, cfg, store, records, rt, _span: span })
    }

    pub fn key(&self) -> String {
        endpoint_key(&self.req.env.container_id, &self.req.env.ifname)
    }

    pub fn ipam(&self, command: &str) -> Result<Option<Value>> {
        let binary = delegate::find(&self.cfg.ipam_type, &self.req.env.path)?;
        if is_our_ipam(&binary) {
            tracing::debug!("{command}: azure-vnet-ipam in process ({} is ours)", binary.display());
            return ipam_in_process(self.req, command);
        }
        let stdin = serde_json::to_vec(&self.req.config).map_err(|e| Error::Io(e.to_string()))?;
        tracing::debug!("{command}: delegating to {}", binary.display());
        delegate::exec(&binary, command, &stdin)
    }

    /// The kernel for this command (`pod_ns`: the pod's namespace, where steps need it).
    pub fn kernel(&self, pod_ns: Option<&Path>) -> Result<RealKernel<'_>> {
        RealKernel::new(&self.rt, pod_ns, &self.cfg.state_file, self.cfg.lock_timeout)
    }

    /// This attachment's record (its own file, or inside the state file from older versions).
    pub fn endpoint(&self, state: &VnetState) -> Result<Option<Endpoint>> {
        match self.records.get(&self.key())? {
            Some(ep) => Ok(Some(ep)),
            None => Ok(state.endpoints.get(&self.key()).cloned()),
        }
    }

    /// Forgets the attachment's record, wherever it is.
    pub fn forget(&self, state: &VnetState) -> Result<()> {
        self.records.remove(&self.key())?;
        if state.endpoints.contains_key(&self.key()) {
            self.update_state(|s| s.endpoints.remove(&self.key()).is_some())?;
        }
        Ok(())
    }

    pub fn update_state(&self, change: impl FnOnce(&mut VnetState) -> bool) -> Result<()> {
        let lock = self.store.lock()?;
        let mut state: VnetState = lock.load()?.unwrap_or_default();
        if change(&mut state) {
            lock.save(&state)?;
        }
        Ok(())
    }
}

/// Test-only: `AZURE_VNET_TEST_CRASH_AFTER=<point>` makes the plugin SIGKILL itself right after
/// that point of an ADD ("ipam", "record", or a step's name), so tests can prove that a crash
/// anywhere leaves nothing a later DEL or GC does not clean. Never set in production.
pub fn crash_point(point: &str) {
    if std::env::var("AZURE_VNET_TEST_CRASH_AFTER").is_ok_and(|p| p == point) {
        tracing::warn!("AZURE_VNET_TEST_CRASH_AFTER={point}: killing myself");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    }
}

/// The IPAM binary is our own azure-vnet-ipam when it sits next to this executable: then
/// the same code runs in this process and saves an exec per call (about a third of an ADD).
/// Any other IPAM plugin, or another build of azure-vnet-ipam elsewhere, is exec'd.
fn is_our_ipam(binary: &Path) -> bool {
    let ours = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
    binary.file_name().is_some_and(|n| n == "azure-vnet-ipam")
        && binary.parent().map(Path::to_path_buf) == ours
}

/// Runs azure-vnet-ipam's command on the same request, answering as the exec'd plugin would.
fn ipam_in_process(req: &Request, command: &str) -> Result<Option<Value>> {
    let plugin = IpamPlugin::new(Box::new(Sysfs::default()));
    let outcome = match command {
        "ADD" => plugin.add(req).map(|r| Some(r.render(req.version))),
        "DEL" => plugin.del(req).map(|()| None),
        "CHECK" => plugin.check(req).map(|()| None),
        "STATUS" => plugin.status(req).map(|()| None),
        "GC" => crate::skel::valid_attachments(&req.config).and_then(|v| plugin.gc(req, &v)).map(|()| None),
        other => Err(Error::InvalidConfig(format!("no IPAM command {other}"))),
    };
    outcome.map_err(|e| Error::Delegate {
        plugin: "azure-vnet-ipam".into(),
        code: e.code(),
        msg: e.to_string(),
    })
}
