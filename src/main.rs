//! The `weir` command line: run SQL files on the embedded engine, explain them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::util::pretty::pretty_format_batches;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use weir::cluster::ClusterConfig;
use weir::{Engine, Executed, RunningJob};
use weir_sql::{JobOutput, SqlError, StatementText};

use out::outln;
use tableau::Tableau;

mod cluster_commands;
mod out;
mod shell;
mod tableau;

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
    /// Run every statement of a SQL file on an embedded cluster.
    ///
    /// Every statement is planned before anything runs. With bounded
    /// sources (or a LIMIT), exits 0 once every job finished. With
    /// unbounded sources, runs until Ctrl-C, which stops the jobs gracefully
    /// (a second Ctrl-C cancels them, and the exit code is 130).
    Run {
        /// The SQL file (`-` for standard input).
        file: PathBuf,
        /// Default parallelism of every operator (`SET 'parallelism.default'` overrides).
        #[arg(long, short = 'p', default_value_t = 1, env = "WEIR_PARALLELISM")]
        parallelism: usize,
        /// Seconds between progress reports on stderr (0 turns them off).
        #[arg(long, default_value_t = 5)]
        progress_interval: u64,
        /// Workers of the embedded cluster the jobs run on (a coordinator and
        /// the workers in this process; with 2 or more, data between them
        /// crosses loopback gRPC).
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

/// Plans every statement of a script before anything runs; every error,
/// each with its position, when some do not plan.
pub(crate) async fn check_script(
    engine: &mut Engine,
    script: &str,
    origin: &str,
    statements: &[StatementText],
) -> anyhow::Result<()> {
    let errors = engine.check(statements).await?;
    if errors.is_empty() {
        return Ok(());
    }
    let count = errors.len();
    let mut text = String::new();
    for e in errors {
        text.push_str(&weir::render_sql_error(
            script,
            origin,
            &e.statement,
            e.error,
        ));
        text.push('\n');
    }
    text.push_str(&format!(
        "{count} statement{} of {origin} do{} not plan; nothing was run",
        if count == 1 { "" } else { "s" },
        if count == 1 { "es" } else { "" }
    ));
    bail!(text)
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
        read.saturating_sub(last.0) as f64 / dt,
        written.saturating_sub(last.1) as f64 / dt,
    );
    *last = (read, written, Instant::now());
    line
}

/// How a `weir run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunEnd {
    /// Every job ended by itself (bounded input, or a LIMIT reached).
    Finished,
    /// Ctrl-C: the jobs stopped gracefully.
    Stopped,
    /// A second Ctrl-C: the jobs were cancelled.
    Cancelled,
}

async fn run(
    file: PathBuf,
    parallelism: usize,
    progress_interval: u64,
    workers: usize,
    config: Option<PathBuf>,
) -> anyhow::Result<std::process::ExitCode> {
    let script = read_script(&file)?;
    let origin = file.display().to_string();
    let statements =
        weir_sql::split_statements(&script).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    let config = ClusterConfig::load(config.as_deref())?;
    // Jobs run on an embedded cluster (one worker by default): they take
    // checkpoints, commit their sinks per checkpoint and restart after a
    // failure, as on a cluster.
    let mut engine = Engine::embedded_cluster(parallelism, workers.max(1), config).await?;
    let result = run_script(&mut engine, &script, &file, &statements, progress_interval).await;
    engine.shutdown().await;
    result
}

async fn run_script(
    engine: &mut Engine,
    script: &str,
    file: &std::path::Path,
    statements: &[StatementText],
    progress_interval: u64,
) -> anyhow::Result<std::process::ExitCode> {
    let origin = file.display().to_string();
    check_script(engine, script, &origin, statements).await?;
    let started = Instant::now();
    let mut jobs: Vec<RunningJob> = Vec::new();
    let mut printers = tokio::task::JoinSet::new();
    for statement in statements {
        let executed = match engine.execute(&statement.text).await {
            Ok(executed) => executed,
            Err(e) => {
                // Planned a moment ago: starting failed (the cluster refused
                // the job). Stop what this run started.
                jobs.iter().for_each(RunningJob::cancel);
                return Err(render_error(script, file, statement, e));
            }
        };
        match executed {
            Executed::Text(t) => eprintln!("{t}"),
            Executed::Explain(plan) => outln!("{plan}")?,
            Executed::Rows(b) => outln!("{}", pretty_format_batches(&[b])?)?,
            Executed::Job(job) => {
                eprintln!("Job '{}' started, writing to {}.", job.name(), job.output());
                for warning in job.warnings() {
                    eprintln!("Warning: job '{}': {warning}.", job.name());
                }
                jobs.push(job);
            }
            Executed::Query {
                job,
                mut rows,
                schema,
            } => {
                eprintln!("Query '{}' started.", job.name());
                printers.spawn(async move {
                    let mut tableau = Tableau::new(std::io::stdout(), schema);
                    while let Some(batch) = rows.recv().await {
                        tableau.push(&batch)?;
                    }
                    tableau.finish()
                });
                jobs.push(job);
            }
        }
    }
    if jobs.is_empty() {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let mut last = (0, 0, Instant::now());
    let mut ticker = tokio::time::interval(Duration::from_secs(progress_interval.max(1)));
    ticker.tick().await;
    let mut end = RunEnd::Finished;
    let mut printer_failure = None;
    // One listener for the whole run: no Ctrl-C is missed between two.
    let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot handle Ctrl-C")?;
    loop {
        if jobs.iter().all(|j| j.is_finished()) {
            break;
        }
        tokio::select! {
            _ = ticker.tick(), if progress_interval > 0 => {
                eprintln!("{}", progress_line(&jobs, started, &mut last));
            }
            _ = interrupts.recv() => {
                if end == RunEnd::Finished {
                    end = RunEnd::Stopped;
                    eprintln!("Stopping: sources stop, in-flight data drains, sinks flush (Ctrl-C again to cancel).");
                    jobs.iter().for_each(RunningJob::stop);
                } else {
                    end = RunEnd::Cancelled;
                    eprintln!("Cancelling.");
                    jobs.iter().for_each(RunningJob::cancel);
                }
            }
            Some(printed) = printers.join_next(), if printer_failure.is_none() => {
                if let Ok(Err(e)) = printed {
                    // Nobody reads the rows any more (a closed pipe): the
                    // queries end here.
                    jobs.iter().for_each(RunningJob::cancel);
                    printer_failure = Some(e);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    let mut summaries = Vec::new();
    let mut failures = Vec::new();
    let (mut late, mut bad, mut unmatched) = (0, 0, 0);
    for job in jobs {
        let counters = job.counters();
        late += counters.late;
        bad += counters.bad;
        unmatched += counters.unmatched;
        let line = match job.output() {
            JobOutput::Caller => format!(
                "  {}: {} rows read, {} rows printed",
                job.name(),
                counters.read,
                counters.written
            ),
            output => format!(
                "  {}: {} rows read, {} rows written to {output}",
                job.name(),
                counters.read,
                counters.written
            ),
        };
        let name = job.name().to_string();
        match job.wait().await {
            Ok(()) => summaries.push(line),
            Err(_) if end == RunEnd::Cancelled => summaries.push(format!("{line} (cancelled)")),
            Err(e) => {
                summaries.push(format!("{line} (failed)"));
                failures.push(format!("job '{name}' failed: {e}"));
            }
        }
    }
    while let Some(printed) = printers.join_next().await {
        if let Ok(Err(e)) = printed
            && printer_failure.is_none()
        {
            printer_failure = Some(e);
        }
    }
    if let Some(e) = printer_failure {
        return Err(e.context("printing the rows of a query"));
    }
    let how = match end {
        RunEnd::Finished => "Finished",
        RunEnd::Stopped => "Stopped",
        RunEnd::Cancelled => "Cancelled",
    };
    eprintln!("{how} in {:.1}s.", started.elapsed().as_secs_f64());
    for line in summaries {
        eprintln!("{line}");
    }
    if late > 0 {
        eprintln!(
            "{late} late rows (they arrived after the watermark passed their window): dropped, \
             or written to the table 'table.exec.late-records.sink' names."
        );
    }
    if bad > 0 {
        eprintln!(
            "{bad} bad records skipped (dropped or dead-lettered by 'scan.bad-record-policy')."
        );
    }
    if unmatched > 0 {
        eprintln!(
            "{unmatched} deletions of rows never seen dropped (counted in \
             weir_unmatched_deletes_total; see 'table.exec.source.cdc-events-duplicate')."
        );
    }
    if !failures.is_empty() {
        bail!(failures.join("\n"));
    }
    Ok(match end {
        // 128 + SIGINT, as a shell reports a program Ctrl-C ended.
        RunEnd::Cancelled => std::process::ExitCode::from(130),
        RunEnd::Finished | RunEnd::Stopped => std::process::ExitCode::SUCCESS,
    })
}

async fn explain(file: PathBuf, parallelism: usize, dot: bool) -> anyhow::Result<()> {
    let script = read_script(&file)?;
    let mut session = weir_sql::Session::new(weir_connectors::default_registry());
    session.set_default_parallelism(parallelism);
    let statements = weir_sql::split_statements(&script)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let explained = statements
        .iter()
        .filter(|s| {
            matches!(
                weir_sql::statement::parse_statement(&s.text),
                Ok(weir_sql::statement::Statement::Insert { .. }
                    | weir_sql::statement::Statement::Query(_))
            )
        })
        .count();
    for statement in statements {
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
            if explained > 1 {
                // Several graphs: say which statement each one is.
                let label = statement_label(&statement);
                if dot {
                    outln!("// {label}")?;
                } else {
                    outln!("-- {label}")?;
                }
            }
            outln!("{graph}")?;
        }
    }
    Ok(())
}

/// `line 4: INSERT INTO out SELECT …`: where a statement starts and how.
fn statement_label(statement: &StatementText) -> String {
    let first: String = statement
        .text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let short: String = first.chars().take(60).collect();
    let more = if first.chars().count() > 60 {
        " …"
    } else {
        ""
    };
    format!("line {}: {short}{more}", statement.start.line)
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
        // stdout was closed (`weir jobs | head -1`): nothing more to say.
        Err(e) if out::is_closed_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", out::describe(&e));
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
            } => run(file, parallelism, progress_interval, workers, config.config).await,
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
