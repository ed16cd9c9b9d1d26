//! Servers the remote-store tests start: a static web server, an S3-compatible server and a
//! fault-injecting proxy, each on 127.0.0.1 on a free port, stopped when its guard drops.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Tmp, require_tool};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A server process started by a test, killed when dropped (also when the test fails).
pub struct Server {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Server {
    pub fn start(name: &str, mut cmd: Command, port: u16, log: PathBuf) -> Server {
        let out = std::fs::File::create(&log).expect("server log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut server = Server { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{name} exited ({status}):\n{}", server.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not listen on 127.0.0.1:{port}:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn python() -> Command {
    require_tool("python3");
    Command::new("python3")
}

/// python3 -m http.server serving `dir`: a plain static web server, no listing API.
pub fn web_server(tmp: &Tmp, dir: &Path) -> Server {
    let port = free_port();
    let mut cmd = python();
    cmd.args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
        .arg(dir)
        .arg(port.to_string());
    Server::start(
        "http.server",
        cmd,
        port,
        tmp.path(&format!("http-{port}.log")),
    )
}

pub fn fault_proxy(tmp: &Tmp, port: u16, upstream: u16, faults: &[&str]) -> Server {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fault_proxy.py");
    let mut cmd = python();
    cmd.arg(script)
        .args(["--port", &port.to_string()])
        .args(["--upstream", &format!("127.0.0.1:{upstream}")])
        .args(faults);
    Server::start(
        "fault_proxy.py",
        cmd,
        port,
        tmp.path(&format!("proxy-{port}.log")),
    )
}

pub fn proxy_stats(proxy: &Server) -> serde_json::Value {
    let body = http_request(proxy.port, "GET /__stats HTTP/1.1");
    let json = body.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(json).expect("proxy stats")
}

/// moto_server, an S3-compatible server; `env` can switch on its credential checks.
pub fn s3_server(tmp: &Tmp, env: &[(&str, &str)]) -> Server {
    require_tool("moto_server");
    let port = free_port();
    let mut cmd = Command::new("moto_server");
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Server::start(
        "moto_server",
        cmd,
        port,
        tmp.path(&format!("moto-{port}.log")),
    )
}

pub fn http_request(port: u16, request_line: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "{request_line}\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

pub fn create_bucket(s3: &Server, bucket: &str) {
    let answer = http_request(s3.port, &format!("PUT /{bucket} HTTP/1.1"));
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "creating bucket: {answer}"
    );
}

/// The variables a rescued host would set for S3 (moto accepts any key unless told not to).
pub fn s3_env(port: u16) -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), "restore-test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "restore-test-secret".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        (
            "AWS_ENDPOINT_URL".into(),
            format!("http://127.0.0.1:{port}"),
        ),
    ]
}

/// tests/hostile_http.py in MODE (drip, bomb, maze, auth), serving `dir`.
pub fn hostile_server(tmp: &Tmp, mode: &str, dir: &Path) -> Server {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile_http.py");
    let port = free_port();
    let mut cmd = python();
    cmd.arg(script).arg(port.to_string()).arg(mode).arg(dir);
    Server::start(
        "hostile_http.py",
        cmd,
        port,
        tmp.path(&format!("hostile-{mode}-{port}.log")),
    )
}
