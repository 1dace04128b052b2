//! A real cluster for tests: the `weir` binary started as one coordinator
//! and N worker processes on 127.0.0.x, each logging to its own file.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weir::cluster::Client;

pub fn weir() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("WEIR_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .env_remove("WEIR_CONFIG");
    command
}

pub struct TestCluster {
    pub address: String,
    /// The coordinator's Prometheus endpoint (`host:port`).
    pub metrics_address: String,
    /// The coordinator's Postgres address, when started with `--pg-listen`.
    pub pg_address: Option<String>,
    coordinator: Child,
    coordinator_args: Vec<String>,
    /// Environment of every process (coordinator and workers, restarts too).
    common_env: Vec<(String, String)>,
    pub workers: Vec<(String, Child)>,
    dir: tempfile::TempDir,
    slots: u32,
}

/// Heartbeat timeout of test clusters: a lost worker is noticed this fast.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

impl TestCluster {
    /// A coordinator and `workers` workers (`w1`… on 127.0.0.2…) with `slots` each.
    pub async fn start(workers: usize, slots: u32) -> Self {
        Self::start_with_env(workers, slots, &[]).await
    }

    pub async fn start_with_env(workers: usize, slots: u32, env: &[(&str, &str)]) -> Self {
        Self::start_with(workers, slots, env, &[]).await
    }

    /// A cluster whose coordinator gets `coordinator_args` on top of the usual flags.
    pub async fn start_with_coordinator_args(
        workers: usize,
        slots: u32,
        coordinator_args: &[&str],
    ) -> Self {
        Self::start_with(workers, slots, &[], coordinator_args).await
    }

    /// A cluster all of whose processes, restarted ones too, get `env`.
    pub async fn start_with_common_env(workers: usize, slots: u32, env: &[(&str, &str)]) -> Self {
        Self::start_full(workers, slots, &[], &[], env).await
    }

    async fn start_with(
        workers: usize,
        slots: u32,
        env: &[(&str, &str)],
        coordinator_args: &[&str],
    ) -> Self {
        Self::start_full(workers, slots, env, coordinator_args, &[]).await
    }

    async fn start_full(
        workers: usize,
        slots: u32,
        env: &[(&str, &str)],
        coordinator_args: &[&str],
        common_env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let coordinator_args: Vec<String> =
            coordinator_args.iter().map(|a| a.to_string()).collect();
        let common_env: Vec<(String, String)> = common_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (coordinator, address, metrics_address, pg_address) = start_coordinator(
            &dir,
            "127.0.0.1:0",
            "coordinator",
            &coordinator_args,
            &common_env,
        );
        let mut cluster = Self {
            address,
            metrics_address,
            pg_address,
            coordinator,
            coordinator_args,
            common_env,
            workers: Vec::new(),
            dir,
            slots,
        };
        for i in 0..workers {
            let id = format!("w{}", i + 1);
            let child = cluster.spawn_worker(&id, &format!("127.0.0.{}", i + 2), slots, env);
            cluster.workers.push((id, child));
        }
        cluster.wait_for_workers(workers).await;
        cluster
    }

    /// SIGKILLs the coordinator and starts a new one on the same address,
    /// with the same state and checkpoint directories.
    pub fn restart_coordinator(&mut self) {
        let _ = self.coordinator.kill();
        let _ = self.coordinator.wait();
        let (coordinator, address, metrics_address, pg_address) = start_coordinator(
            &self.dir,
            &self.address,
            "coordinator-restarted",
            &self.coordinator_args,
            &self.common_env,
        );
        assert_eq!(address, self.address);
        self.coordinator = coordinator;
        self.metrics_address = metrics_address;
        self.pg_address = pg_address;
    }

    /// Starts a worker process (not added to the cluster's list).
    pub fn spawn_worker(&self, id: &str, host: &str, slots: u32, env: &[(&str, &str)]) -> Child {
        weir()
            .args(["worker", "--coordinator", &self.address, "--id", id])
            .args([
                "--listen",
                &format!("{host}:0"),
                "--slots",
                &slots.to_string(),
            ])
            .arg("--state-dir")
            .arg(self.dir.path().join(format!("state-{id}")))
            .envs(self.common_env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, id))
            .spawn()
            .expect("start a worker")
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.address, Duration::from_secs(5))
            .await
            .expect("connect to the coordinator")
    }

    pub async fn wait_for_workers(&self, n: usize) {
        let client = self.client().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let registered = client.workers().await.unwrap().len();
            if registered == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{registered} of {n} workers registered\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs a worker.
    pub fn kill_worker(&mut self, id: &str) {
        let (_, child) = self
            .workers
            .iter_mut()
            .find(|(w, _)| w == id)
            .expect("known worker");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGKILLs a worker and, after `pause`, starts it again (same id and host).
    pub async fn restart_worker(&mut self, id: &str, pause: Duration) {
        self.kill_worker(id);
        tokio::time::sleep(pause).await;
        self.replace_worker(id, &[]);
    }

    /// Kills a worker (if alive) and starts a new process in its place with `env`.
    pub fn replace_worker(&mut self, id: &str, env: &[(&str, &str)]) {
        let n: usize = id
            .trim_start_matches('w')
            .parse()
            .expect("a worker named wN");
        let slots = self.slots;
        let child = self.spawn_worker(id, &format!("127.0.0.{}", n + 1), slots, env);
        let (_, old) = self
            .workers
            .iter_mut()
            .find(|(w, _)| w == id)
            .expect("known worker");
        let _ = old.kill();
        let _ = old.wait();
        *old = child;
    }

    /// The directory the coordinator stores checkpoints in (by job id).
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.dir.path().join("checkpoints")
    }

    /// Whether a worker's process is still running.
    pub fn worker_is_alive(&mut self, id: &str) -> bool {
        self.workers
            .iter_mut()
            .find(|(w, _)| w == id)
            .is_some_and(|(_, c)| c.try_wait().unwrap().is_none())
    }

    /// Sends a signal (`STOP`, `CONT` …) to a worker.
    pub fn signal_worker(&self, id: &str, signal: &str) {
        let pid = self.workers.iter().find(|(w, _)| w == id).unwrap().1.id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn coordinator_is_alive(&mut self) -> bool {
        self.coordinator.try_wait().unwrap().is_none()
    }

    pub fn alive_workers(&mut self) -> usize {
        self.workers
            .iter_mut()
            .filter_map(|(_, c)| c.try_wait().unwrap().is_none().then_some(()))
            .count()
    }

    /// Every process's log, for failure messages.
    /// True when some process logged `needle`.
    pub fn logs_contain(&self, needle: &str) -> bool {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(needle)))
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- {}\n", f.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.coordinator.kill();
        let _ = self.coordinator.wait();
    }
}

/// Starts a coordinator listening on `listen` (logging to `log`.log);
/// returns it, its address, its metrics address and its Postgres address.
fn start_coordinator(
    dir: &tempfile::TempDir,
    listen: &str,
    log: &str,
    extra: &[String],
    env: &[(String, String)],
) -> (Child, String, String, Option<String>) {
    let mut coordinator = weir()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args([
            "coordinator",
            "--listen",
            listen,
            "--heartbeat-interval-ms",
            "300",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--checkpoint-dir")
        .arg(dir.path().join("checkpoints"))
        .arg("--state-dir")
        .arg(dir.path().join("coordinator-state"))
        .args([
            "--heartbeat-timeout-ms",
            &HEARTBEAT_TIMEOUT.as_millis().to_string(),
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(log_file(dir, log))
        .spawn()
        .expect("start the coordinator");
    let mut stdout = BufReader::new(coordinator.stdout.take().unwrap());
    let address = read_prefixed(&mut stdout, "coordinator listening on ");
    let metrics_address = read_prefixed(&mut stdout, "metrics on http://")
        .trim_end_matches("/metrics")
        .to_string();
    let pg_address = extra
        .iter()
        .any(|a| a == "--pg-listen")
        .then(|| read_prefixed(&mut stdout, "postgres on "));
    (coordinator, address, metrics_address, pg_address)
}

/// Follows a job until it ends, failing the test after `within`.
pub async fn wait_for_end(client: &Client, job: &str, within: Duration) -> weir_proto::JobSummary {
    tokio::time::timeout(within, client.wait(job, Duration::from_millis(50), |_| {}))
        .await
        .unwrap_or_else(|_| panic!("job {job} did not end within {within:?}"))
        .unwrap()
}

/// The rest of the next line, which must start with `prefix`.
pub fn read_prefixed(reader: &mut impl BufRead, prefix: &str) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line.trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
        .to_string()
}

/// `GET path` over HTTP/1.1: the status line and the body.
pub fn http_get(address: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn log_file(dir: &tempfile::TempDir, name: &str) -> std::fs::File {
    // Appended to: a worker restarted under the same id keeps what its
    // killed predecessor logged.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join(format!("{name}.log")))
        .unwrap()
}

/// Peak resident memory of a process, in bytes (Linux).
pub fn peak_rss(pid: u32) -> u64 {
    rss_field(pid, "VmHWM:")
}

/// Current resident memory of a process, in bytes (Linux).
pub fn current_rss(pid: u32) -> u64 {
    rss_field(pid, "VmRSS:")
}

fn rss_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
