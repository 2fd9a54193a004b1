//! azure-hostagent-emulator: answers the host agent's interface query (NMAgent XML) for tests,
//! benchmarks and the lab. It serves a file, re-read on every request, so a test can change
//! the node's secondary addresses while plugins run.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

const HELP: &str = "\
azure-hostagent-emulator — serve NMAgent interface XML like Azure's host agent (168.63.129.16)

Usage: azure-hostagent-emulator --listen ADDR:PORT --interfaces FILE [--status CODE] [--delay-ms N]

  --listen ADDR:PORT   address to listen on (e.g. 168.63.129.16:80 inside a lab namespace)
  --interfaces FILE    the XML answered for GET .../machine/plugins?comp=nmagent&type=getinterfaceinfov1;
                       re-read on every request
  --status CODE        answer every request with this HTTP status instead (fault injection)
  --delay-ms N         wait N ms before answering (fault injection)

Prints \"listening on ADDR\" on stdout once ready. Other paths get 404.
";

struct Options {
    listen: String,
    interfaces: PathBuf,
    status: Option<u16>,
    delay: Duration,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut interfaces, mut status, mut delay) = (None, None, None, Duration::ZERO);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => listen = Some(value("--listen")?),
            "--interfaces" => interfaces = Some(PathBuf::from(value("--interfaces")?)),
            "--status" => status = Some(value("--status")?.parse().map_err(|_| "--status needs a number")?),
            "--delay-ms" => {
                delay = Duration::from_millis(
                    value("--delay-ms")?.parse().map_err(|_| "--delay-ms needs a number")?,
                )
            }
            "--help" | "-h" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(Options {
        listen: listen.ok_or("--listen is required")?,
        interfaces: interfaces.ok_or("--interfaces is required")?,
        status,
        delay,
    })
}

fn answer(opts: &Options, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain headers.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    std::thread::sleep(opts.delay);
    let wanted = request_line.starts_with("GET ") && request_line.contains("type=getinterfaceinfov1");
    let (status, body) = match (opts.status, wanted) {
        (Some(code), _) => (code, Vec::new()),
        (None, false) => (404, b"not found".to_vec()),
        (None, true) => match std::fs::read(&opts.interfaces) {
            Ok(b) => (200, b),
            Err(e) => (500, e.to_string().into_bytes()),
        },
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("azure-hostagent-emulator: {e}\n\n{HELP}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(&opts.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("azure-hostagent-emulator: cannot listen on {}: {e}", opts.listen);
            std::process::exit(1);
        }
    };
    println!("listening on {}", listener.local_addr().map_or(opts.listen.clone(), |a| a.to_string()));
    let _ = std::io::stdout().flush();
    let opts = std::sync::Arc::new(opts);
    for stream in listener.incoming().flatten() {
        let opts = opts.clone();
        std::thread::spawn(move || {
            if let Err(e) = answer(&opts, stream) {
                eprintln!("azure-hostagent-emulator: {e}");
            }
        });
    }
}
