//! The metrics port is reachable by anyone on the node: garbage, long request lines, slow
//! clients and 10k connections get a 4xx or a closed connection, and a scrape still works
//! right after (the bad-input table in docs/policy.md, rows "metrics port").

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use npm::metrics::{self, Health, MAX_CLIENTS, REQUEST_DEADLINE};

fn server() -> SocketAddr {
    let recorder = metrics::builder().unwrap().build_recorder();
    let handle = recorder.handle();
    ::metrics::with_local_recorder(&recorder, || {
        ::metrics::gauge!(metrics::POLICIES).set(3.0);
        ::metrics::histogram!(metrics::ADD_POLICY_MS, "had_error" => "false").record(12.0);
    });
    metrics::serve("127.0.0.1:0".parse().unwrap(), handle, Health::default()).unwrap()
}

/// Sends `request` and returns the status line and body ("" when the server closed without
/// answering).
fn ask(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.lines().next().unwrap_or("").to_string();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A scrape succeeds within a few seconds (a connection arriving while `MAX_CLIENTS` are in
/// flight is closed at once, so right after a burst the scraper may need to try again).
fn scrape_works(addr: SocketAddr) {
    let deadline = Instant::now() + REQUEST_DEADLINE * 3;
    loop {
        let (status, body) = ask(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
        if status == "HTTP/1.0 200 OK" {
            assert!(body.contains("npm_num_policies 3"), "{body}");
            return;
        }
        assert!(Instant::now() < deadline, "no scrape answered; last: {status:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn azure_paths_split_the_families() {
    let addr = server();
    let (_, cluster) = ask(addr, b"GET /cluster-metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(cluster.contains("npm_num_policies 3") && !cluster.contains("exec_time"), "{cluster}");
    let (_, node) = ask(addr, b"GET /node-metrics?x=1 HTTP/1.1\r\n\r\n");
    assert!(node.contains("npm_add_policy_exec_time_count{had_error=\"false\"} 1"), "{node}");
    assert!(!node.contains("npm_num_policies"), "{node}");
    let (status, _) = ask(addr, b"GET /readyz HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.0 503 Service Unavailable");
}

#[test]
fn garbage_and_long_request_lines_get_a_4xx_and_the_next_scrape_works() {
    let addr = server();
    let cases: [(Vec<u8>, &str); 5] = [
        (b"\x00\xff\xfe garbage\n".to_vec(), "400"),
        (b"POST /metrics HTTP/1.0\r\n\r\n".to_vec(), "405"),
        (b"GET /nothing HTTP/1.0\r\n\r\n".to_vec(), "404"),
        (b"\r\n".to_vec(), "405"),
        ([b"GET /".to_vec(), vec![b'a'; 1 << 20]].concat(), "414"),
    ];
    for (request, code) in cases {
        let (status, _) = ask(addr, &request);
        assert!(
            status.starts_with(&format!("HTTP/1.0 {code}")),
            "{:?} -> {status}",
            &request[..request.len().min(20)]
        );
        scrape_works(addr);
    }
    // A client that says nothing gets a timeout, not a thread held forever.
    let start = Instant::now();
    let (status, _) = ask(addr, b"");
    assert!(status.starts_with("HTTP/1.0 408"), "{status}");
    assert!(start.elapsed() < REQUEST_DEADLINE * 3);
}

#[test]
fn ten_thousand_connections_and_a_crowd_of_silent_ones_leave_the_server_serving() {
    let addr = server();
    for _ in 0..10_000 {
        drop(TcpStream::connect(addr).unwrap());
    }
    scrape_works(addr);
    // More silent clients than the server serves at once: the extra ones are closed at once,
    // and once the silent ones time out, scrapes work again.
    let crowd: Vec<TcpStream> = (0..MAX_CLIENTS * 4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let threads = std::fs::read_dir("/proc/self/task").unwrap().count();
    assert!(threads < MAX_CLIENTS + 16, "{threads} threads for {} clients", crowd.len());
    std::thread::sleep(REQUEST_DEADLINE + Duration::from_millis(500));
    scrape_works(addr);
    drop(crowd);
    scrape_works(addr);
}
