//! Where the agent learns the cluster from. `dir:PATH` reads Kubernetes YAML files; the
//! `kube` source (watching an API server) is not built yet.

pub mod dir;
