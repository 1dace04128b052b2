//! The `weir` command line: run SQL files on the embedded engine, explain them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::util::pretty::pretty_format_batches;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use weir::cluster::ClusterConfig;
use weir::{Engine, Executed, RunningJob};
use weir_sql::{SqlError, StatementText};

mod cluster_commands;
mod shell;

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Weir: a stream processing engine over Apache Arrow, driven by SQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every statement of a SQL file on the embedded engine.
    ///
    /// With bounded sources, exits 0 once every input is exhausted and every
    /// window has fired. With unbounded sources, runs until Ctrl-C, which
    /// stops the jobs gracefully (a second Ctrl-C cancels them).
    Run {
        /// The SQL file (`-` for standard input).
        file: PathBuf,
        /// Default parallelism of every operator (`SET 'parallelism.default'` overrides).
        #[arg(long, short = 'p', default_value_t = 1, env = "WEIR_PARALLELISM")]
        parallelism: usize,
        /// Seconds between progress reports on stderr (0 turns them off).
        #[arg(long, default_value_t = 5)]
        progress_interval: u64,
        /// Run on an embedded cluster of this many workers (a coordinator and
        /// the workers in this process, exchanging data over loopback gRPC).
        /// 1 runs every subtask in this process without a network.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        #[command(flatten)]
        config: cluster_commands::ConfigArgs,
    },
    /// Print the dataflow graph of every INSERT and SELECT in a SQL file.
    Explain {
        /// The SQL file (`-` for standard input).
        file: PathBuf,
        /// Default parallelism of every operator.
        #[arg(long, short = 'p', default_value_t = 1)]
        parallelism: usize,
        /// Print Graphviz DOT instead of text.
        #[arg(long)]
        dot: bool,
    },
    /// The SQL shell: statements at a prompt (or from `-f FILE` / `-e SQL`)
    /// on a coordinator (`--coordinator`) or an embedded cluster.
    Sql(shell::SqlArgs),
    #[command(flatten)]
    Cluster(cluster_commands::ClusterCommand),
}

pub(crate) fn read_script(file: &PathBuf) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        return Ok(s);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// An error with the offending line of the script and a caret under the spot.
fn render_error(
    script: &str,
    file: &std::path::Path,
    statement: &StatementText,
    error: SqlError,
) -> anyhow::Error {
    anyhow::anyhow!(weir::render_sql_error(
        script,
        &file.display().to_string(),
        statement,
        error
    ))
}

fn progress_line(jobs: &[RunningJob], started: Instant, last: &mut (u64, u64, Instant)) -> String {
    let (mut read, mut written) = (0, 0);
    for job in jobs {
        let counters = job.counters();
        read += counters.read;
        written += counters.written;
    }
    let dt = last.2.elapsed().as_secs_f64().max(1e-3);
    let line = format!(
        "[{:>6.1}s] records in: {read} ({:.0}/s), records out: {written} ({:.0}/s)",
        started.elapsed().as_secs_f64(),
        (read - last.0) as f64 / dt,
        (written - last.1) as f64 / dt,
    );
    *last = (read, written, Instant::now());
    line
}

async fn run(
    file: PathBuf,
    parallelism: usize,
    progress_interval: u64,
    workers: usize,
    config: Option<PathBuf>,
) -> anyhow::Result<()> {
    let script = read_script(&file)?;
    let mut engine = if workers > 1 {
        let config = ClusterConfig::load(config.as_deref())?;
        Engine::embedded_cluster(parallelism, workers, config).await?
    } else {
        Engine::new(parallelism)
    };
    let mut jobs: Vec<RunningJob> = Vec::new();
    let mut printers = tokio::task::JoinSet::new();
    for statement in weir_sql::split_statements(&script)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
    {
        let executed = engine
            .execute(&statement.text)
            .await
            .map_err(|e| render_error(&script, &file, &statement, e))?;
        match executed {
            Executed::Text(t) => eprintln!("{t}"),
            Executed::Rows(b) => println!("{}", pretty_format_batches(&[b])?),
            Executed::Job(job) => {
                eprintln!("Job '{}' started.", job.name());
                jobs.push(job);
            }
            Executed::Query { job, mut rows, .. } => {
                eprintln!("Query '{}' started.", job.name());
                printers.spawn(async move {
                    while let Some(batch) = rows.recv().await {
                        match pretty_format_batches(&[batch]) {
                            Ok(table) => println!("{table}"),
                            Err(e) => eprintln!("cannot format rows: {e}"),
                        }
                    }
                });
                jobs.push(job);
            }
        }
    }
    if jobs.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let mut last = (0, 0, Instant::now());
    let mut ticker = tokio::time::interval(Duration::from_secs(progress_interval.max(1)));
    ticker.tick().await;
    let mut interrupts = 0;
    loop {
        if jobs.iter().all(|j| j.is_finished()) {
            break;
        }
        tokio::select! {
            _ = ticker.tick(), if progress_interval > 0 => {
                eprintln!("{}", progress_line(&jobs, started, &mut last));
            }
            _ = tokio::signal::ctrl_c() => {
                interrupts += 1;
                if interrupts == 1 {
                    eprintln!("Stopping: sources stop, in-flight data drains, sinks flush (Ctrl-C again to cancel).");
                    jobs.iter().for_each(RunningJob::stop);
                } else {
                    eprintln!("Cancelling.");
                    jobs.iter().for_each(RunningJob::cancel);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    let late: u64 = jobs.iter().map(|j| j.counters().late).sum();
    if late > 0 {
        eprintln!(
            "{late} late rows dropped (they arrived after the watermark passed their window)."
        );
    }
    let bad: u64 = jobs.iter().map(|j| j.counters().bad).sum();
    if bad > 0 {
        eprintln!(
            "{bad} bad records skipped (dropped or dead-lettered by 'scan.bad-record-policy')."
        );
    }
    let mut failures = Vec::new();
    for job in jobs {
        let name = job.name().to_string();
        if let Err(e) = job.wait().await {
            failures.push(format!("job '{name}' failed: {e}"));
        }
    }
    while printers.join_next().await.is_some() {}
    if progress_interval > 0 && started.elapsed() > Duration::from_secs(progress_interval) {
        eprintln!("Finished in {:.1}s.", started.elapsed().as_secs_f64());
    }
    if !failures.is_empty() {
        bail!(failures.join("\n"));
    }
    Ok(())
}

async fn explain(file: PathBuf, parallelism: usize, dot: bool) -> anyhow::Result<()> {
    let script = read_script(&file)?;
    let mut session = weir_sql::Session::new(weir_connectors::default_registry());
    session.set_default_parallelism(parallelism);
    for statement in weir_sql::split_statements(&script)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
    {
        let parsed = weir_sql::statement::parse_statement(&statement.text)
            .map_err(|e| render_error(&script, &file, &statement, e))?;
        let text = match parsed {
            weir_sql::statement::Statement::Insert { .. }
            | weir_sql::statement::Statement::Query(_) => {
                format!(
                    "EXPLAIN {}{}",
                    if dot { "(FORMAT DOT) " } else { "" },
                    statement.text
                )
            }
            _ => statement.text.clone(),
        };
        let shifted = StatementText {
            text: text.clone(),
            start: statement.start,
        };
        if let weir_sql::Outcome::Explain(graph) = session
            .execute(&text)
            .await
            .map_err(|e| render_error(&script, &file, &shifted, e))?
        {
            println!("{graph}");
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // Failpoints named in $FAILPOINTS (fault tests crash processes at
    // exact steps of the checkpoint protocol); none by default.
    let failpoints = fail::FailScenario::setup();
    let result = run_command(cli);
    failpoints.teardown();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_command(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let done = std::process::ExitCode::SUCCESS;
        match cli.command {
            Command::Run {
                file,
                parallelism,
                progress_interval,
                workers,
                config,
            } => run(file, parallelism, progress_interval, workers, config.config)
                .await
                .map(|()| done),
            Command::Explain {
                file,
                parallelism,
                dot,
            } => explain(file, parallelism, dot).await.map(|()| done),
            Command::Sql(args) => shell::run(args).await,
            Command::Cluster(command) => cluster_commands::run(command).await.map(|()| done),
        }
    })
}
