//! A Prometheus scrape endpoint: `GET /metrics` answers the text exposition
//! format. A scrape is one small request, so a minimal HTTP/1 responder on a
//! tokio listener does the job without a web framework.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tracing::debug;

use super::{Result, bind};

/// The largest request head read before answering.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves `render()` at `http://<listen>/metrics` until the task is aborted.
pub async fn serve_metrics(
    listen: &str,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let (listener, address) = bind(listen, "metrics").await?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, peer)) = listener.accept().await else {
                continue;
            };
            let render = Arc::clone(&render);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&head);
                let (status, body) = match request.split_whitespace().take(2).collect::<Vec<_>>()[..]
                {
                    ["GET", "/metrics"] => ("200 OK", render()),
                    _ => ("404 Not Found", "see /metrics\n".to_string()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                if let Err(e) = socket.write_all(response.as_bytes()).await {
                    debug!(%peer, error = %e, "metrics scrape failed");
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok((address, task))
}

/// Appends one metric family (HELP and TYPE lines, then samples).
pub(crate) fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// A label value escaped as Prometheus requires.
pub(crate) fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
