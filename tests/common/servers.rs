//! Servers the remote-store tests start: a static web server, an S3-compatible server and a
//! fault-injecting proxy, each on 127.0.0.1 on a free port, stopped when its guard drops.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Tmp, in_ci, require_tool};

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

/// Whether to run the tests against a real Ceph RADOS Gateway (they start a whole cluster:
/// seconds, and about 1 GiB of memory). RESTORE_TEST_RGW=1 asks for them, =0 declines them;
/// unset, they run in CI (where a cluster that cannot start fails them, like every missing
/// tool) and are skipped with a note elsewhere. scripts/test.sh sets 1 unless told 0.
pub fn rgw_wanted(test: &str) -> bool {
    let flag = std::env::var("RESTORE_TEST_RGW").ok();
    let on = match flag.as_deref() {
        Some("1") => true,
        Some("0") => false,
        _ => in_ci(),
    };
    if !on {
        eprintln!(
            "{test}: skipped: set RESTORE_TEST_RGW=1 to run the tests against a real Ceph RGW (scripts/rgw.sh starts one)"
        );
    }
    on
}

/// A single-node Ceph cluster with a RADOS Gateway (scripts/rgw.sh) whose files live in
/// `dir`, with a bucket "backups" and a user whose keys are the ones `s3_env` gives. Stopped
/// when dropped, also when the test panics; the script's watcher stops it if the test process
/// is killed before that.
pub struct Rgw {
    dir: PathBuf,
    pub port: u16,
}

fn rgw_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rgw.sh")
}

impl Rgw {
    pub fn start(dir: &Path) -> Rgw {
        require_tool("bash");
        let started = Instant::now();
        let o = Command::new("bash")
            .arg(rgw_script())
            .arg("start")
            .arg(dir)
            .env("RGW_OWNER_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("running scripts/rgw.sh");
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // The script stops what it started when it fails, so there is nothing to drop here.
        assert!(
            o.status.success(),
            "scripts/rgw.sh start {} failed ({}):\n{out}",
            dir.display(),
            o.status
        );
        eprintln!("{} (test saw {:?})", out.trim(), started.elapsed());
        let mut rgw = Rgw {
            dir: dir.to_path_buf(),
            port: 0,
        };
        let env = std::fs::read_to_string(dir.join("env")).expect("rgw.sh env file");
        rgw.port = env
            .lines()
            .find_map(|l| l.strip_prefix("RGW_ENDPOINT=http://127.0.0.1:"))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no RGW_ENDPOINT in {}/env:\n{env}", dir.display()));
        rgw
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// GETs `path` (BUCKET/KEY) signed with the test user's keys; the body, or None on 404.
    pub fn get(&self, path: &str) -> Option<Vec<u8>> {
        require_tool("curl");
        let env = s3_env(self.port);
        let key = |k: &str| env.iter().find(|(n, _)| n == k).unwrap().1.clone();
        let o = Command::new("curl")
            .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
            .arg("--user")
            .arg(format!(
                "{}:{}",
                key("AWS_ACCESS_KEY_ID"),
                key("AWS_SECRET_ACCESS_KEY")
            ))
            .args(["-H", &format!("x-amz-content-sha256: {EMPTY_SHA256}")])
            .arg(format!("{}/{path}", self.url()))
            .output()
            .expect("running curl");
        let mut body = o.stdout;
        let split = body.iter().rposition(|&b| b == b'\n').expect("curl status");
        let status = String::from_utf8_lossy(&body[split + 1..]).into_owned();
        body.truncate(split);
        match status.as_str() {
            "200" => Some(body),
            "404" => None,
            _ => panic!(
                "GET {path} from RGW: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
}

/// SHA-256 of nothing: the payload hash S3 wants on a signed request without a body.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl Drop for Rgw {
    fn drop(&mut self) {
        let o = Command::new("bash")
            .arg(rgw_script())
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
        match o {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "scripts/rgw.sh stop {} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("scripts/rgw.sh stop {}: {e}", self.dir.display()),
        }
    }
}
