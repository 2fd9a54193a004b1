//! A scripted Kubernetes list/watch server (plain HTTP) for what a real API server will not do
//! on demand: refuse a list for a while, answer a watch with 410 Gone, tear a connection in the
//! middle of an event. It runs on a thread inside the test's namespace.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::Netns;

/// What a watch connection does next.
pub enum Step {
    /// One watch event (`ADDED`, `MODIFIED`, `DELETED`) with an object.
    Event(&'static str, Value),
    /// An ERROR event with status 410 Gone, then the end of the stream.
    Gone,
    /// Half an event, then the connection drops.
    Tear,
}

#[derive(Default)]
pub struct Resource {
    pub items: Vec<Value>,
    pub version: u64,
    /// Lists answer 500 while this is set.
    pub refuse_lists: bool,
    pub steps: VecDeque<Step>,
    pub lists: usize,
    pub watches: usize,
}

#[derive(Default)]
pub struct State {
    /// By collection path, e.g. `/api/v1/pods`.
    pub resources: HashMap<String, Resource>,
    pub stop: bool,
}

pub struct FakeApi {
    pub state: Arc<Mutex<State>>,
    pub port: u16,
    netns: String,
}

pub const NAMESPACES: &str = "/api/v1/namespaces";
pub const PODS: &str = "/api/v1/pods";
pub const NODES: &str = "/api/v1/nodes";
pub const POLICIES: &str = "/apis/networking.k8s.io/v1/networkpolicies";

impl FakeApi {
    pub fn start(ns: &Netns) -> FakeApi {
        let state = Arc::new(Mutex::new(State::default()));
        for path in [NAMESPACES, PODS, NODES, POLICIES] {
            state
                .lock()
                .unwrap()
                .resources
                .insert(path.into(), Resource { version: 1, ..Resource::default() });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = state.clone();
        testkit::spawn_in(&ns.name, move || {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap().port()).unwrap();
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                if state.lock().unwrap().stop {
                    return;
                }
                std::thread::spawn(move || serve(stream, state));
            }
        });
        FakeApi { state, port: rx.recv().unwrap(), netns: ns.name.clone() }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("fake.kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: f, cluster: {{server: \"http://127.0.0.1:{}\"}}}}]\n\
             users: [{{name: u, user: {{}}}}]\ncontexts: [{{name: f, context: {{cluster: f, user: u}}}}]\ncurrent-context: f\n",
            self.port
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for FakeApi {
    /// Stops the watch streams and wakes the listener so it closes (its socket would otherwise
    /// keep the namespace alive until the test process ends).
    fn drop(&mut self) {
        self.state.lock().unwrap().stop = true;
        let port = self.port;
        let _ = testkit::spawn_in(&self.netns, move || TcpStream::connect(("127.0.0.1", port))).join();
    }
}

fn serve(stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).map_or(true, |n| n == 0) || header.trim().is_empty() {
            break;
        }
    }
    let target = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let watch = query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let mut out = stream;
    if watch {
        watch_stream(&mut out, path, &state);
    } else {
        list(&mut out, path, &state);
    }
}

fn respond(out: &mut TcpStream, status: &str, body: &Value) {
    let body = body.to_string();
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn list(out: &mut TcpStream, path: &str, state: &Mutex<State>) {
    let mut s = state.lock().unwrap();
    let Some(r) = s.resources.get_mut(path) else {
        respond(out, "404 Not Found", &json!({"kind": "Status", "code": 404}));
        return;
    };
    r.lists += 1;
    if r.refuse_lists {
        respond(
            out,
            "500 Internal Server Error",
            &json!({"kind": "Status", "code": 500, "message": "scripted"}),
        );
        return;
    }
    let body = json!({"metadata": {"resourceVersion": r.version.to_string()}, "items": r.items});
    drop(s);
    respond(out, "200 OK", &body);
}

fn watch_stream(out: &mut TcpStream, path: &str, state: &Mutex<State>) {
    if let Some(r) = state.lock().unwrap().resources.get_mut(path) {
        r.watches += 1;
    }
    let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n");
    loop {
        let step = {
            let mut s = state.lock().unwrap();
            if s.stop {
                return;
            }
            s.resources.get_mut(path).and_then(|r| r.steps.pop_front())
        };
        let line = match step {
            None => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Some(Step::Event(kind, object)) => json!({"type": kind, "object": object}).to_string(),
            Some(Step::Gone) => {
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "too old resource version", "reason": "Expired", "code": 410});
                let _ = writeln!(out, "{}", json!({"type": "ERROR", "object": status}));
                return;
            }
            Some(Step::Tear) => {
                let _ = write!(out, "{{\"type\":\"ADDED\",\"object\":{{\"metadata\":{{\"na");
                let _ = out.flush();
                return;
            }
        };
        if writeln!(out, "{line}").is_err() {
            return;
        }
        let _ = out.flush();
    }
}
