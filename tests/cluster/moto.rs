//! An S3-compatible object store for the tests: moto's server (`moto_server`,
//! installed by `./dev setup` into `~/.cache/weir-venv`), a real HTTP
//! process on 127.0.0.1 that the coordinator and workers reach through
//! `object_store`'s S3 client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    port: u16,
}

/// Where `moto_server` is: `$WEIR_MOTO_SERVER`, the venv `./dev setup`
/// makes, or the `PATH`.
fn moto_server() -> PathBuf {
    if let Ok(path) = std::env::var("WEIR_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = std::env::var("HOME")
        .map(|h| PathBuf::from(h).join(".cache/weir-venv/bin/moto_server"))
        .unwrap_or_default();
    if venv.exists() {
        return venv;
    }
    PathBuf::from("moto_server")
}

impl Moto {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto_server (./dev setup installs it): {e}"));
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while moto.request("GET", "/", "").is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// `http://127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points `object_store`'s S3 client here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "weir-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "weir-test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// One unsigned HTTP/1.1 request (moto does not check signatures); the
    /// status line and the body.
    fn request(&self, method: &str, path: &str, body: &str) -> std::io::Result<(String, String)> {
        let mut socket = TcpStream::connect(("127.0.0.1", self.port))?;
        socket.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            socket,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )?;
        let mut response = String::new();
        socket.read_to_string(&mut response)?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        Ok((
            head.lines().next().unwrap_or_default().to_string(),
            body.to_string(),
        ))
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.request("PUT", &format!("/{bucket}"), "").unwrap();
        assert!(status.contains("200"), "{status}: {body}");
    }

    /// The keys under `prefix` in `bucket` (first 1000).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (status, body) = self
            .request("GET", &format!("/{bucket}?list-type=2&prefix={prefix}"), "")
            .unwrap();
        assert!(status.contains("200"), "{status}: {body}");
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
