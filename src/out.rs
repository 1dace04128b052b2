//! Standard output for the `weir` commands. `println!` panics when stdout
//! is a pipe whose reader went away (`weir jobs | head -1`); these return
//! the error instead, and `main` ends the process quietly (exit 0) when
//! the cause of a failure is a closed stdout.

use std::fmt;
use std::io::Write;

/// Writes one line to standard output.
pub fn line(args: fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// `println!` that returns an `io::Result` instead of panicking.
macro_rules! outln {
    () => {
        $crate::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// True when `error` comes from writing to a closed pipe.
pub fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line, each cause once: a cause whose
/// text its parent already shows (`"…: Address already in use"`) is not
/// repeated.
pub fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_shown_by_its_parent_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let error = anyhow::Error::new(io).context("cannot listen on 127.0.0.1:7070");
        assert_eq!(
            describe(&error),
            "cannot listen on 127.0.0.1:7070: Address already in use"
        );
        let wrapped = anyhow::anyhow!("cannot listen on 127.0.0.1:7070: Address already in use")
            .context("starting the coordinator");
        assert_eq!(
            describe(&wrapped),
            "starting the coordinator: cannot listen on 127.0.0.1:7070: Address already in use"
        );
    }

    #[test]
    fn a_closed_pipe_is_recognised_through_context() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "Broken pipe");
        let error = anyhow::Error::new(io).context("printing rows");
        assert!(is_closed_pipe(&error));
        assert!(!is_closed_pipe(&anyhow::anyhow!("Broken pipe")));
    }
}
