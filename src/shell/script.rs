//! The statements of a shell script, for planning it whole before anything
//! runs: `\` commands between statements are skipped, and the statements
//! of files included with `\i` are taken in their place, each with the
//! script it comes from (for error positions).

use std::path::Path;

use weir_sql::StatementText;

use super::editor::{is_known_command, is_meta, statement_complete};

/// How deep `\i` may nest (a file including itself stops here).
const MAX_INCLUDE_DEPTH: usize = 16;

/// One statement of a script, or of a file it includes.
#[derive(Debug, Clone)]
pub struct ScriptStatement {
    /// Where it comes from: the script's name, or the included file.
    pub origin: String,
    /// The whole text of that script (errors quote its lines).
    pub script: std::sync::Arc<String>,
    /// The statement, positioned in that script.
    pub statement: StatementText,
}

/// A script's statements, and what is wrong with its `\` commands.
#[derive(Debug, Default)]
pub struct Script {
    /// Every statement, in the order the shell runs them.
    pub statements: Vec<ScriptStatement>,
    /// Unknown commands and files `\i` cannot read, one message each.
    pub problems: Vec<String>,
}

/// Every statement of `script` (and of the files it includes).
pub fn statements(script: &str, origin: &str) -> Result<Script, String> {
    let mut out = Script::default();
    collect(script, origin, 0, &mut out)?;
    Ok(out)
}

fn collect(script: &str, origin: &str, depth: usize, out: &mut Script) -> Result<(), String> {
    if depth > MAX_INCLUDE_DEPTH {
        return Err(format!(
            "{origin}: \\i nests deeper than {MAX_INCLUDE_DEPTH} files (does a file include itself?)"
        ));
    }
    let shared = std::sync::Arc::new(script.to_string());
    // The script with its `\` commands blanked (lines kept, so positions
    // stay true) since the last `\i`.
    let mut masked = String::new();
    let mut chunk = String::new();
    let flush = |masked: &str, out: &mut Script| -> Result<(), String> {
        let split = weir_sql::split_statements(masked).map_err(|e| format!("{origin}: {e}"))?;
        out.statements
            .extend(split.into_iter().map(|statement| ScriptStatement {
                origin: origin.to_string(),
                script: std::sync::Arc::clone(&shared),
                statement,
            }));
        Ok(())
    };
    for (n, line) in script.split_inclusive('\n').enumerate() {
        if chunk.trim().is_empty() && is_meta(line) {
            chunk.clear();
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("\\i"), Some(file)) => {
                    flush(&masked, out)?;
                    masked = masked.chars().filter(|&c| c == '\n').collect();
                    match std::fs::read_to_string(Path::new(file)) {
                        Ok(included) => collect(&included, file, depth + 1, out)?,
                        Err(e) => out
                            .problems
                            .push(format!("{origin}, line {}: cannot read {file}: {e}", n + 1)),
                    }
                }
                (Some(name), _) if !is_known_command(name) => out.problems.push(format!(
                    "{origin}, line {}: unknown command {name}; \\? lists the commands",
                    n + 1
                )),
                _ => {}
            }
            masked.push('\n');
            continue;
        }
        chunk.push_str(line);
        masked.push_str(line);
        if statement_complete(&chunk) {
            chunk.clear();
        }
    }
    flush(&masked, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_skipped_and_includes_taken_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let included = dir.path().join("tables.sql");
        std::fs::write(
            &included,
            "CREATE TABLE t (id BIGINT) WITH ('connector' = 'blackhole');\n",
        )
        .unwrap();
        let script = format!(
            "\\timing on\nSET 'a' = 'b';\n\\i {}\nSELECT\n  1;\n",
            included.display()
        );
        let found = statements(&script, "job.sql").unwrap();
        assert!(found.problems.is_empty(), "{:?}", found.problems);
        let summary: Vec<(String, String, u64)> = found
            .statements
            .iter()
            .map(|s| {
                (
                    s.origin.clone(),
                    s.statement.text.clone(),
                    s.statement.start.line,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("job.sql".to_string(), "SET 'a' = 'b'".to_string(), 2),
                (
                    included.display().to_string(),
                    "CREATE TABLE t (id BIGINT) WITH ('connector' = 'blackhole')".to_string(),
                    1
                ),
                ("job.sql".to_string(), "SELECT\n  1".to_string(), 4),
            ]
        );
    }

    #[test]
    fn unknown_commands_and_missing_files_are_problems() {
        let found = statements("\\frob\nSELECT 1;\n\\i /nonexistent/x.sql\n", "-e").unwrap();
        assert_eq!(found.statements.len(), 1);
        assert_eq!(found.problems.len(), 2, "{:?}", found.problems);
        assert!(found.problems[0].contains("-e, line 1: unknown command \\frob"));
        assert!(found.problems[1].contains("line 3: cannot read /nonexistent/x.sql"));
    }

    #[test]
    fn a_file_including_itself_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("loop.sql");
        std::fs::write(&file, format!("\\i {}\n", file.display())).unwrap();
        let error = statements(&format!("\\i {}\n", file.display()), "-e").unwrap_err();
        assert!(error.contains("nests deeper"), "{error}");
    }
}
