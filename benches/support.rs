//! What the benchmarks share: the Bid-shaped `datagen` table of the peer
//! scripts, the row count knob, and CPU time read from `/proc`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `weir` binary of this build.
pub fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

/// A coordinator and worker processes on loopback.
pub struct Cluster {
    pub address: String,
    pub processes: Vec<Child>,
    slots: u32,
}

/// Worker `n` (1-based) of a cluster: `w<n>` on 127.0.0.<n+1>.
fn spawn_worker(address: &str, n: usize, slots: u32) -> Child {
    weir()
        .args([
            "worker",
            "--coordinator",
            address,
            "--slots",
            &slots.to_string(),
            "--id",
            &format!("w{n}"),
        ])
        .args(["--listen", &format!("127.0.0.{}:0", n + 1)])
        .stdout(Stdio::null())
        .spawn()
        .expect("start a worker")
}

impl Cluster {
    /// A coordinator (with extra `coordinator_args`) and `workers` workers
    /// of `slots` slots each, registered.
    pub fn start(workers: usize, slots: u32, coordinator_args: &[&str]) -> Cluster {
        let mut coordinator = weir()
            .args(["coordinator", "--listen", "127.0.0.1:0"])
            .args(coordinator_args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the coordinator");
        let mut line = String::new();
        let stdout = coordinator.stdout.take().expect("coordinator stdout");
        BufReader::new(stdout).read_line(&mut line).expect("read");
        let address = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        let mut processes = vec![coordinator];
        for i in 0..workers {
            processes.push(spawn_worker(&address, i + 1, slots));
        }
        let cluster = Cluster {
            address,
            processes,
            slots,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while cluster.workers() < workers {
            assert!(Instant::now() < deadline, "workers did not register");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// SIGKILLs worker `n` (1-based) and starts a new process in its place.
    pub fn restart_worker(&mut self, n: usize, pause: Duration) {
        let _ = self.processes[n].kill();
        let _ = self.processes[n].wait();
        std::thread::sleep(pause);
        self.processes[n] = spawn_worker(&self.address, n, self.slots);
    }

    /// Registered workers.
    pub fn workers(&self) -> usize {
        let out = weir()
            .args(["workers", "--coordinator", &self.address])
            .output()
            .expect("weir workers");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .count()
            .saturating_sub(1)
    }

    /// The largest resident set each worker process has had, in MB.
    pub fn worker_peak_rss_mb(&self) -> Vec<f64> {
        self.processes[1..]
            .iter()
            .map(|p| {
                let status = std::fs::read_to_string(format!("/proc/{}/status", p.id()));
                status
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("VmHWM:"))
                            .and_then(|l| l.split_whitespace().nth(1))
                            .and_then(|kb| kb.parse::<f64>().ok())
                    })
                    .map_or(0.0, |kb| kb / 1024.0)
            })
            .collect()
    }

    /// CPU time of every process of the cluster.
    pub fn cpu(&self) -> Duration {
        self.processes
            .iter()
            .map(|p| cpu_time(&p.id().to_string()))
            .sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.processes {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// Rows per run: `WEIR_BENCH_ROWS`, or `default`.
pub fn rows(default: u64) -> u64 {
    std::env::var("WEIR_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU time of a process (`"self"` or a pid), from
/// `/proc/<pid>/stat` (clock ticks of 10 ms).
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// The Bid table of `../shared/peers/flink/` and a blackhole sink.
pub fn bid_table(rows: u64) -> String {
    format!(
        "CREATE TABLE bid (
           id BIGINT, auction BIGINT, bidder BIGINT, price BIGINT, channel STRING,
           ts AS TO_TIMESTAMP_LTZ(id, 3),
           WATERMARK FOR ts AS ts
         ) WITH (
           'connector' = 'datagen', 'number-of-rows' = '{rows}',
           'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{rows}',
           'fields.auction.min' = '1000', 'fields.auction.max' = '1999',
           'fields.bidder.min' = '1000', 'fields.bidder.max' = '10999',
           'fields.price.min' = '1', 'fields.price.max' = '100000',
           'fields.channel.length' = '8'
         );
         CREATE TABLE sink WITH ('connector' = 'blackhole');"
    )
}

/// The windowed aggregation of the peer scripts.
pub const WINDOW_QUERY: &str = "INSERT INTO sink SELECT bidder, COUNT(*), SUM(price), window_start, window_end \
     FROM TUMBLE(bid, ts, INTERVAL '10' SECOND) GROUP BY bidder, window_start, window_end";
