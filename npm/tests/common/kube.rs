//! A real etcd + kube-apiserver inside a test's network namespace (the binary built by
//! `scripts/kube/build.sh`), with an admin user for the test and a service-account
//! user for the agent, and kube-rs clients that run inside the namespace.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::{wait_for, Netns};

pub const AGENT_USER: &str = "system:serviceaccount:kube-system:azure-npm";

/// Where the built API server is: `KUBE_APISERVER`, else `target/kube/kube-apiserver`.
pub fn apiserver_binary() -> PathBuf {
    let path = std::env::var_os("KUBE_APISERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/kube/kube-apiserver"));
    assert!(
        path.exists(),
        "{} is missing: build it with scripts/kube/build.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

pub struct ApiServer {
    pub dir: tempfile::TempDir,
    /// Kubeconfigs for the test (system:masters) and for the agent (its service account).
    pub admin: PathBuf,
    pub agent: PathBuf,
    etcd: Option<std::process::Child>,
    apiserver: Option<std::process::Child>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn kubeconfig(dir: &Path, name: &str, token: &str) -> PathBuf {
    let path = dir.join(format!("{name}.kubeconfig"));
    let ca = dir.join("ca.crt");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"https://127.0.0.1:6443\", certificate-authority: {}}}}}]\n\
         users: [{{name: {name}, user: {{token: {token}}}}}]\n\
         contexts: [{{name: t, context: {{cluster: t, user: {name}}}}}]\ncurrent-context: t\n",
        ca.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

impl ApiServer {
    /// Starts etcd and the API server in `ns` and waits until the server answers.
    pub fn start(ns: &Netns) -> ApiServer {
        let binary = apiserver_binary();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=test-ca",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=kube-apiserver",
            ],
        );
        std::fs::write(
            d.join("ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "ext",
            ],
        );
        openssl(d, &["genrsa", "-out", "sa.key", "2048"]);
        openssl(d, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        std::fs::write(
            d.join("tokens"),
            format!(
                "admin-token,admin,1,\"system:masters\"\nagent-token,{AGENT_USER},2,\"system:serviceaccounts\"\n"
            ),
        )
        .unwrap();
        let mut server = ApiServer {
            admin: kubeconfig(d, "admin", "admin-token"),
            agent: kubeconfig(d, "agent", "agent-token"),
            dir,
            etcd: None,
            apiserver: None,
        };
        let etcd_dir = server.dir.path().join("etcd");
        server.etcd = Some(
            ns.command("etcd")
                .args(["--data-dir", etcd_dir.to_str().unwrap()])
                .args(["--listen-client-urls", "http://127.0.0.1:2379"])
                .args(["--advertise-client-urls", "http://127.0.0.1:2379"])
                .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(server.dir.path().join("etcd.log")).unwrap())
                .spawn()
                .expect("etcd (apt-get install etcd-server)"),
        );
        server.start_apiserver(ns, &binary);
        server
    }

    fn start_apiserver(&mut self, ns: &Netns, binary: &Path) {
        let d = self.dir.path();
        let p = |f: &str| d.join(f).display().to_string();
        let log = std::fs::File::create(d.join("apiserver.log")).unwrap();
        self.apiserver = Some(
            ns.command(binary.to_str().unwrap())
                .args(["--advertise-address", "127.0.0.1", "--bind-address", "127.0.0.1"])
                .args(["--secure-port", "6443", "--etcd-servers", "http://127.0.0.1:2379"])
                .args(["--service-cluster-ip-range", "10.96.0.0/16"])
                .args(["--service-account-issuer", "https://kubernetes.default.svc"])
                .args(["--service-account-key-file", &p("sa.pub")])
                .args(["--service-account-signing-key-file", &p("sa.key")])
                .args(["--tls-cert-file", &p("server.crt"), "--tls-private-key-file", &p("server.key")])
                .args(["--token-auth-file", &p("tokens"), "--authorization-mode", "RBAC"])
                .args(["--disable-admission-plugins", "ServiceAccount", "--endpoint-reconciler-type", "none"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let admin = self.admin.clone();
        wait_for("the API server to serve namespaces", 60, || {
            let admin = admin.clone();
            ns.enter(move || {
                block_on(async move {
                    let client = client(&admin).await;
                    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
                    api.get("default").await.is_ok()
                })
            })
        });
    }

    /// Stops the API server only (etcd keeps the data).
    pub fn stop_apiserver(&mut self) {
        if let Some(mut c) = self.apiserver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart_apiserver(&mut self, ns: &Netns) {
        self.stop_apiserver();
        self.start_apiserver(ns, &apiserver_binary());
    }

    /// Runs `f` with an admin client, inside the namespace.
    pub fn admin<T, F, Fut>(&self, ns: &Netns, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        let admin = self.admin.clone();
        ns.enter(move || block_on(async move { f(client(&admin).await).await }))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop_apiserver();
        if let Some(mut c) = self.etcd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

pub async fn client(kubeconfig: &Path) -> Client {
    let file = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}
