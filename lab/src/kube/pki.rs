//! The lab cluster's credentials: a CA, the API server's serving certificate (its VNet address
//! and the `kubernetes` Service's ClusterIP as SANs), the service-account key pair, and static
//! tokens. Every component (kubelets, kube-proxy, controller-manager, scheduler) and the
//! operator use a token in `system:masters`: a lab shortcut, not how to run a cluster; the
//! workloads (azure-npm) use their own service accounts and RBAC from manifests/.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("openssl: {e} (apt-get install openssl)"))?;
    if !out.status.success() {
        return Err(format!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// The admin token (also used by the cluster's own components).
pub const ADMIN_TOKEN: &str = "azure-lab-admin";

/// Writes the CA, serving cert, service-account keys and token file into `dir`.
pub fn make(dir: &Path, server_ip: Ipv4Addr, service_ip: Ipv4Addr) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let days = ["-days", "30"];
    openssl(
        dir,
        &[
            &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt"][..],
            &days,
            &["-subj", "/CN=azure-lab-ca"],
        ]
        .concat(),
    )?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "apiserver.key",
            "-out",
            "apiserver.csr",
            "-subj",
            "/CN=kube-apiserver",
        ],
    )?;
    let sans = format!(
        "subjectAltName=IP:{server_ip},IP:{service_ip},IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,\
         DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost\n\
         basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    );
    std::fs::write(dir.join("apiserver.ext"), sans).map_err(|e| e.to_string())?;
    openssl(
        dir,
        &[
            &["x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"]
                [..],
            &["-out", "apiserver.crt", "-extfile", "apiserver.ext"],
            &days,
        ]
        .concat(),
    )?;
    openssl(dir, &["genrsa", "-out", "sa.key", "2048"])?;
    openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    std::fs::write(dir.join("tokens.csv"), format!("{ADMIN_TOKEN},azure-lab-admin,1,\"system:masters\"\n"))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A kubeconfig for `server` with the admin token.
pub fn kubeconfig(dir: &Path, server: &str) -> Result<PathBuf, String> {
    let path = dir.join("admin.kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\n\
         clusters: [{{name: lab, cluster: {{server: \"{server}\", certificate-authority: {}}}}}]\n\
         users: [{{name: admin, user: {{token: {ADMIN_TOKEN}}}}}]\n\
         contexts: [{{name: lab, context: {{cluster: lab, user: admin}}}}]\ncurrent-context: lab\n",
        dir.join("ca.crt").display()
    );
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
