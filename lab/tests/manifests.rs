//! The deploy manifests parse into Kubernetes types and say what the code needs: the RBAC grants
//! exactly what azure-npm's watchers call, the agent's DaemonSet has least privilege, the CNI
//! installer ships the same conflist the install script writes, and the install script installs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde_yaml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where cargo put the workspace's binaries (this test runs from its deps/ directory).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    assert!(dir.join("azure-npm").exists(), "{} has no azure-npm: cargo build --workspace", dir.display());
    dir
}

#[derive(Default)]
struct Objects {
    config_maps: Vec<ConfigMap>,
    daemon_sets: Vec<DaemonSet>,
    accounts: Vec<ServiceAccount>,
    roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
}

fn typed<T: DeserializeOwned>(doc: &Value, file: &Path) -> T {
    serde_yaml::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Every document of every manifest, each into its Kubernetes type (unknown kinds fail).
fn objects() -> Objects {
    let mut all = Objects::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(doc).unwrap();
            if value.is_null() {
                continue;
            }
            match value["kind"].as_str() {
                Some("ConfigMap") => all.config_maps.push(typed(&value, &file)),
                Some("DaemonSet") => all.daemon_sets.push(typed(&value, &file)),
                Some("ServiceAccount") => all.accounts.push(typed(&value, &file)),
                Some("ClusterRole") => all.roles.push(typed(&value, &file)),
                Some("ClusterRoleBinding") => all.bindings.push(typed(&value, &file)),
                other => panic!("{}: unexpected kind {other:?}", file.display()),
            }
        }
    }
    all
}

fn daemon_set<'a>(all: &'a Objects, name: &str) -> &'a DaemonSet {
    all.daemon_sets.iter().find(|d| d.metadata.name.as_deref() == Some(name)).unwrap()
}

#[test]
fn the_rbac_grants_exactly_what_the_agent_calls() {
    let all = objects();
    let role = all.roles.iter().find(|r| r.metadata.name.as_deref() == Some("azure-npm")).unwrap();
    let mut granted = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    let called: BTreeSet<(String, String, String)> = npm::source::kube::API_ACCESS
        .iter()
        .flat_map(|(g, r, verbs)| verbs.iter().map(|v| (g.to_string(), r.to_string(), v.to_string())))
        .collect();
    assert_eq!(granted, called);

    let binding = all.bindings.iter().find(|b| b.metadata.name.as_deref() == Some("azure-npm")).unwrap();
    assert_eq!(
        (binding.role_ref.kind.as_str(), binding.role_ref.name.as_str()),
        ("ClusterRole", "azure-npm")
    );
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!((subject.kind.as_str(), subject.name.as_str()), ("ServiceAccount", "azure-npm"));
    let account = all.accounts.iter().find(|a| a.metadata.name.as_deref() == Some("azure-npm")).unwrap();
    assert_eq!(subject.namespace, account.metadata.namespace);
    let ds = daemon_set(&all, "azure-npm");
    let spec = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("azure-npm"));
    assert_eq!(ds.metadata.namespace, account.metadata.namespace);
}

#[test]
fn the_agent_runs_with_least_privilege_on_the_host_network() {
    let all = objects();
    let ds = daemon_set(&all, "azure-npm");
    let template = &ds.spec.as_ref().unwrap().template;
    let spec = template.spec.as_ref().unwrap();
    assert_eq!(spec.host_network, Some(true));
    let c = &spec.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_ne!(sc.privileged, Some(true), "no privileged container");
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.add.as_deref(), Some(&["NET_ADMIN".to_string(), "NET_RAW".to_string()][..]));
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let mounts: Vec<&str> = c.volume_mounts.iter().flatten().map(|m| m.mount_path.as_str()).collect();
    assert!(mounts.contains(&"/run/xtables.lock"), "{mounts:?}");
    let args = c.args.clone().unwrap_or_default().join(" ");
    assert!(args.contains("start --source kube"), "{args}");
    let node = c.env.iter().flatten().find(|e| e.name == "NODE_NAME").unwrap();
    let field = node.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
    assert_eq!(field.field_path, "spec.nodeName");

    // Metrics: the annotations, the port and the agent's default agree.
    let annotations = template.metadata.as_ref().unwrap().annotations.clone().unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "10091");
    assert!(c.ports.iter().flatten().any(|p| p.container_port == 10091));
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone().unwrap()
    };
    assert_eq!(probe_path(&c.readiness_probe), "/readyz");
    assert_eq!(probe_path(&c.liveness_probe), "/healthz");

    // Settings come from the ConfigMap, under names the agent reads.
    let config =
        all.config_maps.iter().find(|m| m.metadata.name.as_deref() == Some("azure-npm-config")).unwrap();
    let npm = bin_dir().join("azure-npm");
    let usage =
        String::from_utf8_lossy(&Command::new(&npm).args(["start", "--help"]).output().unwrap().stdout)
            .into_owned();
    for key in config.data.as_ref().unwrap().keys() {
        assert!(usage.contains(key.as_str()), "azure-npm start does not read {key}:\n{usage}");
    }
}

#[test]
fn the_installer_ships_the_conflist_the_script_writes_and_the_script_installs() {
    let all = objects();
    let version = env!("CARGO_PKG_VERSION");
    let map =
        all.config_maps.iter().find(|m| m.metadata.name.as_deref() == Some("azure-cni-config")).unwrap();
    let shipped: serde_json::Value =
        serde_json::from_str(&map.data.as_ref().unwrap()["10-azure.conflist"]).unwrap();
    let file = std::fs::read(repo().join("manifests/10-azure.conflist")).unwrap();
    assert_eq!(shipped, serde_json::from_slice::<serde_json::Value>(&file).unwrap());
    let list = cni::runtime::ConfList::parse(&file).unwrap();
    assert_eq!(list.plugins[0]["type"], "azure-vnet");

    let ds = daemon_set(&all, "azure-cni");
    let spec = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert!(init.image.as_deref().unwrap().ends_with(&format!(":{version}")));
    assert!(init.command.as_ref().unwrap().iter().any(|a| a == version));
    let host_paths: Vec<String> =
        spec.volumes.iter().flatten().filter_map(|v| Some(v.host_path.as_ref()?.path.clone())).collect();
    assert!(host_paths.contains(&"/opt/cni/bin".into()) && host_paths.contains(&"/etc/cni/net.d".into()));

    // The script itself, into directories of this test's own.
    let bins = bin_dir();
    let dest = tempfile::tempdir().unwrap();
    let run = |version: &str| {
        Command::new(repo().join("scripts/install-cni-plugin.sh"))
            .args([version, "--from", bins.to_str().unwrap()])
            .env("CNI_BIN_DIR", dest.path().join("bin"))
            .env("CNI_CONF_DIR", dest.path().join("net.d"))
            .output()
            .unwrap()
    };
    let out = run(version);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for plugin in ["azure-vnet", "azure-vnet-ipam"] {
        let installed = dest.path().join("bin").join(plugin);
        let v = Command::new(&installed).arg("--version").output().unwrap();
        assert!(String::from_utf8_lossy(&v.stdout).contains(version));
    }
    assert_eq!(std::fs::read(dest.path().join("net.d/10-azure.conflist")).unwrap(), file);
    let wrong = run("9.9.9");
    assert!(!wrong.status.success() && String::from_utf8_lossy(&wrong.stderr).contains("not 9.9.9"));
}
