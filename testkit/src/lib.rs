//! What the privileged tests of every crate share: the root check (a test that needs root fails
//! loudly without it, never skips), network namespaces a test creates and removes (callers
//! remove theirs in `Drop`, so also when the test fails), and running code inside one.
//!
//! Each crate's tests wrap these in their own fixtures (a node, an agent, a fabric); only the
//! kernel-facing basics live here, so every crate gets them right the same way.

use std::process::Command;

/// Panics, naming `what` needs root and how to run the tests, unless this process is root.
pub fn require_root(what: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next());
    assert_eq!(uid, Some("0"), "{what} needs root: run `sudo scripts/test.sh`");
}

/// Creates the network namespace `name` (removing a stale one left by a killed run of the same
/// process id) with `lo` up. Needs root.
pub fn add_netns(name: &str) {
    require_root("this test builds network namespaces and");
    del_netns(name);
    ip(&["netns", "add", name]);
    ip(&["-n", name, "link", "set", "lo", "up"]);
}

/// Removes the network namespace `name`; one already gone is fine.
pub fn del_netns(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// Runs `f` on a thread that has entered the network namespace `name` (the sockets it opens
/// live there); a panic in `f` is the caller's panic.
pub fn enter<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in(name, f).join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Starts `f` on a thread that has entered the network namespace `name` (a server that lives
/// there, say); the thread panics if the namespace cannot be entered.
pub fn spawn_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("cannot run ip: {e}"));
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_made_entered_and_removed() {
        let name = format!("testkit-{}", std::process::id());
        add_netns(&name);
        let links = enter(&name, || {
            // A child forked from this thread starts in the namespace the thread entered.
            let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).lines().count()
        });
        del_netns(&name);
        assert!(!std::path::Path::new(&format!("/var/run/netns/{name}")).exists());
        assert_eq!(links, 1, "a new namespace holds only lo");
    }
}
