//! `weir sql`: the SQL shell. It talks to a coordinator (`--coordinator`)
//! or starts an embedded cluster, and runs statements typed at the prompt
//! (multi-line, history, completion, highlighting), from a file (`-f`) or
//! from the command line (`-e`). `SELECT` runs a temporary job whose rows
//! fill a table that updates in place (or a changelog); Ctrl-C stops the
//! query, not the shell. psql-style `\` commands cover the rest.

mod editor;
mod output;
mod script;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use rustyline::error::ReadlineError;
use tokio::sync::mpsc;
use weir::cluster::client::jobs_listing;
use weir::cluster::{Client, ClusterConfig, EmbeddedCluster};
use weir::{Engine, Executed, RunningJob};
use weir_sql::{Position, StatementText};

use crate::out::outln;
use editor::{CatalogNames, META_COMMANDS, ShellHelper, is_meta, statement_complete};
use output::{Changelog, LiveTable, StreamPrinter, print_batches};
pub use output::{Format, ResultMode};

/// `weir sql`'s arguments.
#[derive(clap::Args)]
pub struct SqlArgs {
    /// The coordinator to connect to. Without it, an embedded cluster
    /// (a coordinator and `--workers` workers) starts in this process.
    #[arg(long, env = "WEIR_COORDINATOR")]
    coordinator: Option<String>,
    /// Run the statements (and `\` commands) of this file, then exit.
    #[arg(long, short = 'f', conflicts_with = "execute")]
    file: Option<PathBuf>,
    /// Run these statements, then exit.
    #[arg(long, short = 'e')]
    execute: Option<String>,
    /// How rows are printed.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// How a SELECT's rows are shown in a terminal.
    #[arg(long, value_enum, default_value_t = ResultMode::Table)]
    mode: ResultMode,
    /// Default parallelism of jobs (`SET 'parallelism.default'` overrides).
    #[arg(long, short = 'p', default_value_t = 1, env = "WEIR_PARALLELISM")]
    parallelism: usize,
    /// Workers of the embedded cluster.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Also serve the Postgres wire protocol at this address (embedded
    /// cluster; a standalone coordinator takes `--pg-listen` itself).
    #[arg(long)]
    pg_listen: Option<String>,
    /// Where the shell keeps its history (env: WEIR_HISTORY; default ~/.weir_history).
    #[arg(long, env = "WEIR_HISTORY")]
    history: Option<PathBuf>,
    #[command(flatten)]
    config: crate::cluster_commands::ConfigArgs,
}

/// Runs the shell; the exit code is 1 when a non-interactive run failed.
pub async fn run(args: SqlArgs) -> anyhow::Result<std::process::ExitCode> {
    let config = ClusterConfig::load(args.config.config.as_deref())?;
    let (client, embedded) = match &args.coordinator {
        Some(address) => (
            Client::connect(address, Duration::from_secs(10)).await?,
            None,
        ),
        None => {
            let config = config.clone();
            let slots = (args.parallelism.div_ceil(args.workers.max(1)) as u32).max(1) * 16;
            let cluster = EmbeddedCluster::start(args.workers, slots, config).await?;
            (cluster.client().clone(), Some(cluster))
        }
    };
    if let Some(listen) = &args.pg_listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        eprintln!("postgres on {}", listener.local_addr()?);
        let options = weir::pg::PgOptions {
            parallelism: args.parallelism,
            password: Some(config.coordinator.pg_password.clone()).filter(|p| !p.is_empty()),
        };
        let pg_client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = weir::pg::serve(listener, pg_client, options).await {
                tracing::error!(error = %e, "the postgres endpoint failed");
            }
        });
    }
    let interactive =
        args.file.is_none() && args.execute.is_none() && std::io::stdin().is_terminal();
    let mut shell = Shell {
        engine: Engine::on_cluster(client, args.parallelism),
        format: args.format,
        mode: args.mode,
        timing: false,
        live: interactive && std::io::stdout().is_terminal(),
        interactive,
        names: Arc::default(),
        stdout_closed: false,
        interrupts: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("cannot handle Ctrl-C")?,
        _embedded: embedded,
    };
    shell.refresh_names();
    let ok = if let Some(sql) = &args.execute {
        shell.run_script(sql, "-e").await
    } else if let Some(file) = &args.file {
        let script = crate::read_script(file)?;
        shell.run_script(&script, &file.display().to_string()).await
    } else if interactive {
        shell.interactive(history_path(args.history)).await?;
        true
    } else {
        let script = crate::read_script(&PathBuf::from("-"))?;
        shell.run_script(&script, "<stdin>").await
    };
    let closed = shell.stdout_closed;
    if let Some(cluster) = shell._embedded.take() {
        cluster.shutdown().await;
    }
    Ok(if ok || closed {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

fn history_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".weir_history")))
}

/// What a `\` command asked for.
enum Meta {
    Continue,
    Quit,
}

struct Shell {
    engine: Engine,
    format: Format,
    mode: ResultMode,
    timing: bool,
    /// Results redraw in place (a terminal on both ends).
    live: bool,
    /// Typed at a prompt: errors do not end the session.
    interactive: bool,
    names: CatalogNames,
    /// Standard output was closed (a pipe whose reader left): stop quietly.
    stdout_closed: bool,
    /// Ctrl-C, caught from the start so that it never ends the shell
    /// while a statement runs (at the prompt, the line editor reads it).
    interrupts: tokio::signal::unix::Signal,
    _embedded: Option<EmbeddedCluster>,
}

impl Shell {
    /// The interactive loop: read a complete statement (or `\` command),
    /// run it, repeat until `\q` or Ctrl-D.
    async fn interactive(&mut self, history: Option<PathBuf>) -> anyhow::Result<()> {
        let color = std::env::var_os("NO_COLOR").is_none();
        let mut editor: rustyline::Editor<ShellHelper, rustyline::history::DefaultHistory> =
            rustyline::Editor::with_config(
                rustyline::Config::builder()
                    .auto_add_history(false)
                    .completion_type(rustyline::CompletionType::List)
                    .build(),
            )?;
        editor.set_helper(Some(ShellHelper::new(Arc::clone(&self.names), color)));
        if let Some(path) = &history {
            // A missing history file is the first session.
            let _ = editor.load_history(path);
        }
        outln!(
            "Weir {} SQL shell. Statements end with ';'. \\? lists commands, \\q quits.",
            env!("CARGO_PKG_VERSION")
        )?;
        let mut editor = Some(editor);
        loop {
            let Some(mut ed) = editor.take() else {
                break;
            };
            let (ed, line) = tokio::task::spawn_blocking(move || {
                let line = ed.readline("weir> ");
                (ed, line)
            })
            .await?;
            let mut ed = ed;
            let text = match line {
                Ok(text) => text,
                Err(ReadlineError::Interrupted) => {
                    editor = Some(ed);
                    continue;
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            };
            if text.trim().is_empty() {
                editor = Some(ed);
                continue;
            }
            let _ = ed.add_history_entry(text.trim_end());
            if let Some(path) = &history
                && let Err(e) = ed.save_history(path)
            {
                tracing::debug!(error = %e, "cannot save the history");
            }
            editor = Some(ed);
            if is_meta(&text) {
                if let Meta::Quit = self.meta(text.trim()).await {
                    break;
                }
            } else {
                self.run_script(&text, "error").await;
            }
        }
        Ok(())
    }

    /// Plans every statement of a script (and of the files it includes)
    /// before anything runs; prints every error. False when some fail.
    async fn check_script(&mut self, script: &str, origin: &str) -> bool {
        let script::Script {
            statements,
            problems,
        } = match script::statements(script, origin) {
            Ok(found) => found,
            Err(message) => {
                eprintln!("{message}");
                return false;
            }
        };
        let texts: Vec<StatementText> = statements.iter().map(|s| s.statement.clone()).collect();
        let errors = match self.engine.check(&texts).await {
            Ok(errors) => errors,
            Err(e) => {
                eprintln!("{e}");
                return false;
            }
        };
        for problem in &problems {
            eprintln!("{problem}");
        }
        if errors.is_empty() && problems.is_empty() {
            return true;
        }
        let count = errors.len() + problems.len();
        for e in errors {
            let Some(from) = statements.get(e.index) else {
                continue;
            };
            eprintln!(
                "{}",
                weir::render_sql_error(&from.script, &from.origin, &e.statement, e.error)
            );
        }
        if count > 1 || statements.len() > 1 {
            eprintln!(
                "{count} error{} in the script; nothing was run",
                if count == 1 { "" } else { "s" },
            );
        }
        false
    }

    /// Runs a script: statements and `\` commands (on lines of their own,
    /// between statements), once every statement planned. Errors are
    /// printed; a non-interactive run stops at the first. False when
    /// something failed.
    async fn run_script(&mut self, script: &str, origin: &str) -> bool {
        if !self.check_script(script, origin).await {
            return false;
        }
        let mut ok = true;
        let mut chunk = String::new();
        let mut chunk_line = 1;
        let lines: Vec<&str> = script.split_inclusive('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            if chunk.trim().is_empty() && is_meta(line) {
                chunk.clear();
                if let Meta::Quit = self.meta(line.trim()).await {
                    return ok;
                }
                chunk_line = i + 2;
                continue;
            }
            if chunk.trim().is_empty() {
                chunk.clear();
                chunk_line = i + 1;
            }
            chunk.push_str(line);
            if statement_complete(&chunk) || i + 1 == lines.len() {
                let text = std::mem::take(&mut chunk);
                if !self.run_chunk(script, origin, &text, chunk_line).await {
                    ok = false;
                    if !self.interactive || self.stdout_closed {
                        return false;
                    }
                }
                chunk_line = i + 2;
            }
        }
        ok
    }

    /// Runs the statements of `text`, which starts at line `first_line` of
    /// `script` (for error positions).
    async fn run_chunk(
        &mut self,
        script: &str,
        origin: &str,
        text: &str,
        first_line: usize,
    ) -> bool {
        let statements = match weir_sql::split_statements(text) {
            Ok(s) => s,
            Err(e) => {
                let e = e.offset_by(first_line as u64 - 1, 0);
                let whole = StatementText {
                    text: text.to_string(),
                    start: Position { line: 1, column: 1 },
                };
                eprintln!("{}", weir::render_sql_error(script, origin, &whole, e));
                return false;
            }
        };
        for mut statement in statements {
            statement.start.line += first_line as u64 - 1;
            let started = Instant::now();
            let result = self.run_statement(script, origin, &statement).await;
            if self.timing {
                eprintln!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
            }
            self.refresh_names();
            if let Err(e) = result {
                if crate::out::is_closed_pipe(&e) {
                    // Nobody reads the output any more: stop, quietly.
                    self.stdout_closed = true;
                } else {
                    eprintln!("{}", crate::out::describe(&e));
                }
                return false;
            }
        }
        true
    }

    async fn run_statement(
        &mut self,
        script: &str,
        origin: &str,
        statement: &StatementText,
    ) -> anyhow::Result<()> {
        let executed = match self.engine.execute(&statement.text).await {
            Ok(executed) => executed,
            Err(e) => {
                anyhow::bail!(weir::render_sql_error(script, origin, statement, e))
            }
        };
        match executed {
            Executed::Text(text) => self.message(&text)?,
            Executed::Explain(plan) => outln!("{plan}")?,
            Executed::Rows(batch) => {
                let schema = batch.schema();
                print_batches(
                    &mut std::io::stdout().lock(),
                    &schema,
                    &[batch],
                    self.format,
                )?;
            }
            Executed::Job(job) => {
                self.message(&format!(
                    "Job '{}' submitted: {}",
                    job.name(),
                    job.id().unwrap_or("-")
                ))?;
                for warning in job.warnings() {
                    self.message(&format!("Warning: {warning}."))?;
                }
                job.detach();
            }
            Executed::Query { job, rows, schema } => self.show_query(job, rows, schema).await?,
        }
        Ok(())
    }

    /// A confirmation: on stdout with tables, on stderr with CSV and JSON
    /// (which keep stdout for rows).
    fn message(&self, text: &str) -> std::io::Result<()> {
        if self.format == Format::Table {
            outln!("{text}")
        } else {
            eprintln!("{text}");
            Ok(())
        }
    }

    /// Shows a running query's rows until it ends or Ctrl-C stops it.
    async fn show_query(
        &mut self,
        job: RunningJob,
        mut rows: mpsc::Receiver<RecordBatch>,
        schema: SchemaRef,
    ) -> anyhow::Result<()> {
        enum View {
            Live(LiveTable),
            Changelog(Changelog),
            Stream(StreamPrinter),
        }
        let mut view = match (self.live, self.mode, self.format) {
            (true, ResultMode::Table, Format::Table) => View::Live(LiveTable::new(schema)),
            (true, ResultMode::Changelog, Format::Table) => View::Changelog(Changelog::new(schema)),
            _ => View::Stream(StreamPrinter::new(schema, self.format)),
        };
        let status = |job: &RunningJob| {
            format!(
                "query {} running · Ctrl-C stops it",
                job.id().unwrap_or(job.name())
            )
        };
        let mut redraw = tokio::time::interval(Duration::from_millis(250));
        let mut stopped = false;
        // A Ctrl-C pressed before the query started is not for it.
        while let Some(Some(())) = futures::FutureExt::now_or_never(self.interrupts.recv()) {}
        let shown: anyhow::Result<usize> = async {
            loop {
                tokio::select! {
                    batch = rows.recv() => match batch {
                        Some(batch) => match &mut view {
                            View::Live(t) => t.push(batch)?,
                            View::Changelog(c) => c.push(&batch)?,
                            View::Stream(s) => s.push(batch)?,
                        },
                        None => break,
                    },
                    _ = self.interrupts.recv() => {
                        job.cancel();
                        stopped = true;
                        break;
                    }
                    _ = redraw.tick() => {
                        if let View::Live(t) = &mut view {
                            t.redraw(&status(&job), false)?;
                        }
                    }
                }
            }
            Ok(match view {
                View::Live(mut t) => {
                    let end = if stopped { "stopped" } else { "finished" };
                    t.redraw(&format!("query {end}"), true)?;
                    t.rows
                }
                View::Changelog(c) => c.rows,
                View::Stream(s) => {
                    let n = s.rows;
                    s.finish()?;
                    n
                }
            })
        }
        .await;
        let rows = match shown {
            Ok(rows) => rows,
            Err(e) => {
                // The rows cannot be shown (stdout closed): the query ends.
                job.cancel();
                return Err(e);
            }
        };
        if stopped {
            self.message(&format!("Query stopped after {rows} rows."))?;
            if !self.interactive {
                anyhow::bail!("interrupted");
            }
            return Ok(());
        }
        job.wait().await.context("the query failed")?;
        if self.format == Format::Table && !self.live {
            self.message(&format!("({rows} rows)"))?;
        }
        Ok(())
    }

    /// Runs one `\` command.
    async fn meta(&mut self, command: &str) -> Meta {
        let mut words = command.split_whitespace();
        let name = words.next().unwrap_or("");
        let arg = words.next();
        let sql = match (name, arg) {
            ("\\q" | "\\quit", _) => return Meta::Quit,
            ("\\?" | "\\help", _) => {
                let mut help = String::new();
                for (c, what) in META_COMMANDS {
                    help.push_str(&format!("  {c:<24} {what}\n"));
                }
                help.push_str(
                    "  SQL: CREATE [TEMPORARY] TABLE, DROP TABLE, CREATE [TEMPORARY] VIEW, DROP VIEW,\n",
                );
                help.push_str(
                    "       INSERT INTO … SELECT, SELECT, EXPLAIN, SHOW TABLES, SHOW VIEWS, DESCRIBE t,\n",
                );
                help.push_str("       SHOW JOBS, STOP JOB 'id', CANCEL JOB 'id', SET 'k' = 'v'");
                if outln!("{help}").is_err() {
                    self.stdout_closed = true;
                    return Meta::Quit;
                }
                return Meta::Continue;
            }
            ("\\d" | "\\dt", None) => "SHOW TABLES".to_string(),
            ("\\dv", None) => "SHOW VIEWS".to_string(),
            ("\\d", Some(table)) => format!("DESCRIBE {table}"),
            ("\\jobs", _) => {
                // The compact listing of `weir jobs`: it fits a terminal.
                let listed = match self.engine.client() {
                    Some(client) => client.jobs().await.map(|jobs| jobs_listing(&jobs)),
                    None => Ok("no cluster: no jobs".into()),
                };
                match listed.map(|text| outln!("{text}")) {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        self.stdout_closed = true;
                        return Meta::Quit;
                    }
                    Err(e) => eprintln!("cannot list the jobs: {e}"),
                }
                return Meta::Continue;
            }
            ("\\timing", arg) => {
                self.timing = match arg {
                    Some("on") => true,
                    Some("off") => false,
                    _ => !self.timing,
                };
                let said = self.message(&format!(
                    "Timing is {}.",
                    if self.timing { "on" } else { "off" }
                ));
                if said.is_err() {
                    self.stdout_closed = true;
                    return Meta::Quit;
                }
                return Meta::Continue;
            }
            ("\\mode", Some(mode)) => {
                match <ResultMode as clap::ValueEnum>::from_str(mode, true) {
                    Ok(m) => self.mode = m,
                    Err(_) => eprintln!("\\mode takes table or changelog, not '{mode}'"),
                }
                return Meta::Continue;
            }
            ("\\format", Some(format)) => {
                match <Format as clap::ValueEnum>::from_str(format, true) {
                    Ok(f) => self.format = f,
                    Err(_) => eprintln!("\\format takes table, csv or json, not '{format}'"),
                }
                return Meta::Continue;
            }
            ("\\i", Some(file)) => {
                match std::fs::read_to_string(file) {
                    Ok(script) => {
                        Box::pin(self.run_script(&script, file)).await;
                    }
                    Err(e) => eprintln!("cannot read {file}: {e}"),
                }
                return Meta::Continue;
            }
            _ => {
                eprintln!("unknown command {name}; \\? lists the commands");
                return Meta::Continue;
            }
        };
        let statement = StatementText {
            text: sql.clone(),
            start: Position { line: 1, column: 1 },
        };
        match self.run_statement(&sql, command, &statement).await {
            Err(e) if crate::out::is_closed_pipe(&e) => {
                self.stdout_closed = true;
                Meta::Quit
            }
            Err(e) => {
                eprintln!("{}", crate::out::describe(&e));
                Meta::Continue
            }
            Ok(()) => Meta::Continue,
        }
    }

    /// What completion knows: the session's tables and views and their columns.
    fn refresh_names(&mut self) {
        let session = self.engine.session();
        let views: Vec<(String, Vec<String>)> = session
            .view_names()
            .into_iter()
            .map(|v| {
                let columns = session
                    .view(&v)
                    .and_then(|view| view.schema())
                    .map(|s| s.fields().iter().map(|f| f.name().clone()).collect())
                    .unwrap_or_default();
                (v, columns)
            })
            .collect();
        let names = session
            .table_names()
            .into_iter()
            .map(|t| {
                let columns = session
                    .table(&t)
                    .map(|table| {
                        table
                            .schema
                            .fields()
                            .iter()
                            .map(|f| f.name().clone())
                            .collect()
                    })
                    .unwrap_or_default();
                (t, columns)
            })
            .chain(views)
            .collect();
        *self.names.write().unwrap_or_else(|e| e.into_inner()) = names;
    }
}
