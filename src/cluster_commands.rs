//! `weir coordinator`, `weir worker`, and the client commands that talk to
//! a coordinator (`submit`, `jobs`, `job`, `cancel`, `stop`, `workers`).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use weir::cluster::client::{is_terminal, jobs_listing, state_name, task_state_name};
use weir::cluster::metrics_endpoint::serve_metrics;
use weir::cluster::worker::Worker;
use weir::cluster::{Client, ClusterConfig, Coordinator};
use weir_proto as pb;

use crate::out::outln;
use crate::tableau::Tableau;

/// Where the configuration comes from.
#[derive(Args, Clone)]
pub struct ConfigArgs {
    /// A TOML configuration file (env: WEIR_CONFIG). Every setting can also
    /// be given as WEIR_<SECTION>_<KEY>, e.g. WEIR_WORKER_SLOTS=4; flags win.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// How clients reach the coordinator.
#[derive(Args, Clone)]
pub struct CoordinatorAddress {
    /// The coordinator's address.
    #[arg(long, env = "WEIR_COORDINATOR", default_value = "127.0.0.1:7070")]
    pub coordinator: String,
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Run a coordinator: the control plane that workers join and clients
    /// submit jobs to.
    #[command(after_help = CONFIG_HELP)]
    Coordinator {
        /// Address to listen on (config: coordinator.listen; env: WEIR_COORDINATOR_LISTEN).
        #[arg(long)]
        listen: Option<String>,
        /// Milliseconds between worker heartbeats (config: coordinator.heartbeat_interval_ms).
        #[arg(long)]
        heartbeat_interval_ms: Option<u64>,
        /// A worker silent this long, in milliseconds, is lost and its jobs
        /// fail (config: coordinator.heartbeat_timeout_ms; default 5000).
        #[arg(long)]
        heartbeat_timeout_ms: Option<u64>,
        /// Parallelism of jobs that set none (config: coordinator.default_parallelism).
        #[arg(long)]
        default_parallelism: Option<u32>,
        /// Serve Prometheus metrics at http://ADDR/metrics (config: coordinator.metrics_listen).
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Serve the Postgres wire protocol at ADDR, for `psql` and Postgres
        /// drivers (config: coordinator.pg_listen; password: coordinator.pg_password).
        #[arg(long)]
        pg_listen: Option<String>,
        /// Where jobs store checkpoints by default: a directory, `file:///…`
        /// or `s3://bucket/prefix` (config: coordinator.checkpoint_dir).
        #[arg(long)]
        checkpoint_dir: Option<String>,
        /// Keep job definitions here, so a restarted coordinator resumes its
        /// jobs (config: coordinator.state_dir).
        #[arg(long)]
        state_dir: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Run a worker: joins the coordinator and runs the subtasks placed on it.
    #[command(after_help = CONFIG_HELP)]
    Worker {
        /// The coordinator's address (env: WEIR_COORDINATOR, as for the client
        /// commands; config: worker.coordinator, env WEIR_WORKER_COORDINATOR).
        #[arg(long, env = "WEIR_COORDINATOR")]
        coordinator: Option<String>,
        /// Address of this worker's data plane; port 0 picks a free one
        /// (config: worker.listen).
        #[arg(long)]
        listen: Option<String>,
        /// Unique worker id (config: worker.id; default `worker-<address>`).
        #[arg(long)]
        id: Option<String>,
        /// Parallel job slices this worker runs (config: worker.slots; default: CPU count).
        #[arg(long)]
        slots: Option<u32>,
        /// Credit window per data channel in bytes (config: exchange.credit_bytes).
        #[arg(long)]
        credit_bytes: Option<u64>,
        /// Serve Prometheus metrics at http://ADDR/metrics (config: worker.metrics_listen).
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Local directory of the worker's RocksDB state (config: worker.state_dir).
        #[arg(long)]
        state_dir: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Submit the INSERT / SELECT statements of a SQL file as jobs; prints
    /// each job's id.
    Submit {
        /// The SQL file (`-` for standard input).
        file: PathBuf,
        /// Follow the jobs: show progress, print a SELECT's rows, and exit 0
        /// when they finish (non-zero, with the reason, when one fails).
        #[arg(long)]
        wait: bool,
        /// Default parallelism (0: the coordinator's default).
        #[arg(long, short = 'p', default_value_t = 0)]
        parallelism: u32,
        #[command(flatten)]
        address: CoordinatorAddress,
    },
    /// List the jobs.
    Jobs {
        #[command(flatten)]
        address: CoordinatorAddress,
    },
    /// Show one job: its graph, and each subtask's worker, state and counts.
    Job {
        /// The job's id.
        id: String,
        #[command(flatten)]
        address: CoordinatorAddress,
    },
    /// Cancel a job at once.
    Cancel {
        /// The job's id.
        id: String,
        #[command(flatten)]
        address: CoordinatorAddress,
    },
    /// Stop a job gracefully: sources stop, in-flight data drains, sinks flush.
    Stop {
        /// The job's id.
        id: String,
        #[command(flatten)]
        address: CoordinatorAddress,
    },
    /// Restart a job at another parallelism from its newest completed
    /// checkpoint (keyed state moves by key group).
    Rescale {
        /// The job's id.
        id: String,
        /// The new parallelism.
        #[arg(long, short = 'p')]
        parallelism: u32,
        #[command(flatten)]
        address: CoordinatorAddress,
    },
    /// List the workers.
    Workers {
        #[command(flatten)]
        address: CoordinatorAddress,
    },
}

const CONFIG_HELP: &str = "\
Configuration: flags override WEIR_<SECTION>_<KEY> environment variables,
which override the TOML file given by --config (or WEIR_CONFIG). Keys:
  [coordinator] listen, heartbeat_interval_ms, heartbeat_timeout_ms, default_parallelism,
                metrics_listen, pg_listen, pg_password (SCRAM-SHA-256; empty: trust),
                checkpoint_dir, checkpoint_interval_ms (0: none), checkpoints_retained,
                restart_attempts, restart_delay_ms, state_dir
  [worker]      coordinator, listen, id, slots, connect_timeout_ms, metrics_listen,
                state_dir, state_block_cache_mb, state_write_buffer_mb,
                state_operator_memory_kb (keyed state an operator subtask keeps in
                memory before it spills to RocksDB)
  [exchange]    credit_bytes (per-channel credit window), channel_capacity
                (batches queued per channel), connect_timeout_ms";

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

pub async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Coordinator {
            listen,
            heartbeat_interval_ms,
            heartbeat_timeout_ms,
            default_parallelism,
            metrics_listen,
            pg_listen,
            checkpoint_dir,
            state_dir,
            config,
        } => {
            let mut config = ClusterConfig::load(config.config.as_deref())?;
            let c = &mut config.coordinator;
            c.pg_listen = pg_listen.unwrap_or(c.pg_listen.clone());
            c.checkpoint_dir = checkpoint_dir.unwrap_or(c.checkpoint_dir.clone());
            c.state_dir = state_dir.unwrap_or(c.state_dir.clone());
            c.listen = listen.unwrap_or(c.listen.clone());
            c.heartbeat_interval_ms = heartbeat_interval_ms.unwrap_or(c.heartbeat_interval_ms);
            c.heartbeat_timeout_ms = heartbeat_timeout_ms.unwrap_or(c.heartbeat_timeout_ms);
            c.default_parallelism = default_parallelism.unwrap_or(c.default_parallelism);
            c.metrics_listen = metrics_listen.unwrap_or(c.metrics_listen.clone());
            let coordinator = Coordinator::new(config.coordinator.clone());
            let metrics = {
                let coordinator = coordinator.clone();
                std::sync::Arc::new(move || coordinator.prometheus())
            };
            let (address, server) = coordinator
                .serve(&config.coordinator.listen, ctrl_c())
                .await?;
            outln!("coordinator listening on {address}")?;
            if !config.coordinator.metrics_listen.is_empty() {
                let (at, _task) =
                    serve_metrics(&config.coordinator.metrics_listen, metrics).await?;
                outln!("metrics on http://{at}/metrics")?;
            }
            let _pg = if config.coordinator.pg_listen.is_empty() {
                None
            } else {
                let mut own = address;
                if own.ip().is_unspecified() {
                    own.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                let (at, task) = serve_pg(&config.coordinator, &own.to_string()).await?;
                outln!("postgres on {at}")?;
                Some(task)
            };
            std::io::stdout().flush()?;
            server.await.context("coordinator server")??;
            Ok(())
        }
        ClusterCommand::Worker {
            coordinator,
            listen,
            id,
            slots,
            credit_bytes,
            metrics_listen,
            state_dir,
            config,
        } => {
            let mut config = ClusterConfig::load(config.config.as_deref())?;
            let w = &mut config.worker;
            w.state_dir = state_dir.unwrap_or(w.state_dir.clone());
            w.coordinator = coordinator.unwrap_or(w.coordinator.clone());
            w.listen = listen.unwrap_or(w.listen.clone());
            w.id = id.unwrap_or(w.id.clone());
            w.slots = slots.unwrap_or(w.slots);
            if w.slots == 0 {
                bail!("--slots must be at least 1");
            }
            w.metrics_listen = metrics_listen.unwrap_or(w.metrics_listen.clone());
            config.exchange.credit_bytes = credit_bytes.unwrap_or(config.exchange.credit_bytes);
            let coordinator = config.worker.coordinator.clone();
            let config_metrics = config.worker.metrics_listen.clone();
            let worker = Worker::bind(config).await?;
            outln!(
                "worker {} listening on {} (coordinator {coordinator})",
                worker.id(),
                worker.data_address()
            )?;
            if !config_metrics.is_empty() {
                let (at, _task) = serve_metrics(&config_metrics, worker.metrics_renderer()).await?;
                outln!("metrics on http://{at}/metrics")?;
            }
            std::io::stdout().flush()?;
            worker.run(ctrl_c()).await?;
            Ok(())
        }
        ClusterCommand::Submit {
            file,
            wait,
            parallelism,
            address,
        } => submit(file, wait, parallelism, &address.coordinator).await,
        ClusterCommand::Jobs { address } => {
            let client = client(&address.coordinator).await?;
            outln!("{}", jobs_listing(&client.jobs().await?))?;
            Ok(())
        }
        ClusterCommand::Job { id, address } => {
            let client = client(&address.coordinator).await?;
            print_job(&client.job(&id).await?)?;
            Ok(())
        }
        ClusterCommand::Cancel { id, address } => {
            let detail = client(&address.coordinator).await?.cancel(&id).await?;
            let state = detail.summary.unwrap_or_default().state();
            outln!("job {id}: {}", state_name(state))?;
            Ok(())
        }
        ClusterCommand::Stop { id, address } => {
            let detail = client(&address.coordinator).await?.stop(&id).await?;
            let state = detail.summary.unwrap_or_default().state();
            outln!("job {id}: {}", state_name(state))?;
            Ok(())
        }
        ClusterCommand::Rescale {
            id,
            parallelism,
            address,
        } => {
            client(&address.coordinator)
                .await?
                .rescale(&id, parallelism)
                .await?;
            outln!("job {id}: rescaling to parallelism {parallelism}")?;
            Ok(())
        }
        ClusterCommand::Workers { address } => {
            let client = client(&address.coordinator).await?;
            outln!(
                "{:<24} {:<24} {:>5} {:>5}",
                "ID",
                "DATA ADDRESS",
                "SLOTS",
                "FREE"
            )?;
            for w in client.workers().await? {
                outln!(
                    "{:<24} {:<24} {:>5} {:>5}",
                    w.worker_id,
                    w.data_address,
                    w.slots,
                    w.free_slots
                )?;
            }
            Ok(())
        }
    }
}

/// Serves the Postgres wire protocol next to the coordinator, through a
/// client of the coordinator's own gRPC address.
async fn serve_pg(
    config: &weir::cluster::config::CoordinatorConfig,
    coordinator: &str,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(&config.pg_listen)
        .await
        .with_context(|| format!("cannot listen for postgres on {}", config.pg_listen))?;
    let at = listener.local_addr()?;
    let client = self::client(coordinator).await?;
    let options = weir::pg::PgOptions {
        parallelism: config.default_parallelism.max(1) as usize,
        password: (!config.pg_password.is_empty()).then(|| config.pg_password.clone()),
    };
    let task = tokio::spawn(async move {
        if let Err(e) = weir::pg::serve(listener, client, options).await {
            tracing::error!(error = %e, "the postgres server stopped");
        }
    });
    Ok((at, task))
}

async fn client(address: &str) -> anyhow::Result<Client> {
    Ok(Client::connect(address, Duration::from_secs(5)).await?)
}

fn print_job(detail: &pb::JobDetail) -> std::io::Result<()> {
    let s = detail.summary.clone().unwrap_or_default();
    outln!("job {}  '{}'  {}", s.job_id, s.name, state_name(s.state()))?;
    if !s.failure.is_empty() {
        outln!("failure: {}", s.failure)?;
    }
    outln!(
        "records read: {}  written: {}  late dropped: {}  bad records: {}  state spilled: {} B  restarts: {}  last checkpoint: {}",
        s.records_read,
        s.records_written,
        s.late_records_dropped,
        s.bad_records,
        s.state_spilled_bytes,
        s.restarts,
        match s.last_checkpoint {
            0 => "none".to_string(),
            id => id.to_string(),
        }
    )?;
    outln!("\n{}", detail.plan.trim_end())?;
    outln!(
        "\n{:<8} {:<8} {:<24} {:<10} {:>12} {:>12}  OPERATOR",
        "VERTEX",
        "SUBTASK",
        "WORKER",
        "STATE",
        "IN",
        "OUT"
    )?;
    for t in &detail.subtasks {
        let task = t.task.clone().unwrap_or_default();
        outln!(
            "{:<8} {:<8} {:<24} {:<10} {:>12} {:>12}  {}{}",
            task.vertex,
            task.subtask,
            t.worker_id,
            task_state_name(t.state()),
            t.records_in,
            t.records_out,
            t.vertex_name,
            if t.message.is_empty() {
                String::new()
            } else {
                format!("\n         {}", t.message)
            }
        )?;
    }
    if !detail.checkpoints.is_empty() {
        outln!(
            "\n{:<12} {:<10} {:>10} {:>14} {:>14}  FAILURE",
            "CHECKPOINT",
            "STATUS",
            "MS",
            "STATE BYTES",
            "UPLOADED"
        )?;
        for c in &detail.checkpoints {
            outln!(
                "{:<12} {:<10} {:>10} {:>14} {:>14}  {}",
                c.checkpoint_id,
                c.status,
                c.duration_ms,
                c.state_bytes,
                c.uploaded_bytes,
                c.failure
            )?;
        }
    }
    if !detail.restarts.is_empty() {
        outln!("\nrestarts: {}", detail.restarts.len())?;
        for r in &detail.restarts {
            let at = chrono::DateTime::from_timestamp_millis(r.at_ms)
                .map(|t| t.format("%H:%M:%S%.3f").to_string())
                .unwrap_or_default();
            let from = match r.from_checkpoint {
                0 => "from the start".to_string(),
                id => format!("from checkpoint {id}"),
            };
            outln!("  attempt {} at {at} {from}: {}", r.attempt, r.cause)?;
        }
    }
    Ok(())
}

async fn submit(file: PathBuf, wait: bool, parallelism: u32, address: &str) -> anyhow::Result<()> {
    let script = crate::read_script(&file)?;
    let client = client(address).await?;
    let response = client
        .submit(&script, parallelism, &file.display().to_string())
        .await?;
    for message in &response.messages {
        eprintln!("{message}");
    }
    // What statements show (DESCRIBE, SHOW, EXPLAIN) is output, as in `weir run`.
    for result in &response.results {
        outln!("{result}")?;
    }
    if response.jobs.is_empty() {
        bail!(
            "{}: no INSERT or SELECT statement, so no job was submitted",
            file.display()
        );
    }
    if !wait && response.jobs.iter().any(|j| j.query) {
        for job in &response.jobs {
            let _ = client.cancel(&job.job_id).await;
        }
        bail!("a SELECT returns its rows to the client: submit it with --wait, or use `weir run`");
    }
    for job in &response.jobs {
        outln!("{}", job.job_id)?;
    }
    std::io::stdout().flush()?;
    if !wait {
        return Ok(());
    }
    let mut printers = Vec::new();
    for job in response.jobs.iter().filter(|j| j.query) {
        let mut rows = client.results(&job.job_id).await?;
        printers.push(tokio::spawn(async move {
            let mut tableau: Option<Tableau<std::io::Stdout>> = None;
            while let Some(Ok(batch)) = rows.recv().await {
                tableau
                    .get_or_insert_with(|| Tableau::new(std::io::stdout(), batch.schema()))
                    .push(&batch)?;
            }
            match tableau {
                Some(t) => t.finish(),
                None => Ok(()),
            }
        }));
    }
    let started = Instant::now();
    let mut failures = Vec::new();
    for job in &response.jobs {
        let mut last_report = Instant::now();
        let summary = client
            .wait(&job.job_id, Duration::from_millis(200), |s| {
                if last_report.elapsed() > Duration::from_secs(5) && !is_terminal(s) {
                    last_report = Instant::now();
                    eprintln!(
                        "[{:>6.1}s] job {}: {}, records read: {}, written: {}",
                        started.elapsed().as_secs_f64(),
                        s.job_id,
                        state_name(s.state()),
                        s.records_read,
                        s.records_written
                    );
                }
            })
            .await?;
        match summary.state() {
            pb::JobState::Finished => eprintln!(
                "job {} finished: {} records read, {} written, in {:.1}s",
                summary.job_id,
                summary.records_read,
                summary.records_written,
                started.elapsed().as_secs_f64()
            ),
            state => failures.push(format!(
                "job {} {}: {}",
                summary.job_id,
                state_name(state),
                summary.failure
            )),
        }
    }
    for p in printers {
        if let Ok(Err(e)) = p.await {
            return Err(e.context("printing the rows of a query"));
        }
    }
    if !failures.is_empty() {
        bail!(failures.join("\n"));
    }
    Ok(())
}
