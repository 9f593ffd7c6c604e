//! Stopping cleanly: SIGTERM/SIGINT become a request for a final checkpoint (a second signal
//! exits at once), and a run that cannot start leaves its reason in the Kubernetes
//! termination-message file.

use crate::job::admin::AdminRequest;
use std::io::Write as _;
use std::path::Path;
use std::sync::mpsc::Sender;

/// Where Kubernetes reads a container's termination message from (`terminationMessagePath`).
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// Kubernetes truncates termination messages to 4096 bytes.
const TERMINATION_MESSAGE_MAX: usize = 4096;

/// Waits for SIGTERM or SIGINT and asks the coordinator (through `requests`) to shut down:
/// stop reading input, take a final checkpoint, exit 0. A second signal exits the process at
/// once with `128 + signal number`. Runs on the I/O runtime until the process exits.
pub async fn watch_signals(requests: Sender<AdminRequest>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("cannot install SIGTERM/SIGINT handlers ({e}); signals end the process without a final checkpoint");
            return;
        }
    };
    let first = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    eprintln!(
        "weir: {first} received: stopping input and taking a final checkpoint (send it again to exit at once)"
    );
    if requests
        .send(AdminRequest::Shutdown { signal: first })
        .is_err()
    {
        // the coordinator is gone (the job is ending anyway)
        std::process::exit(exit_code(first));
    }
    let second = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    eprintln!("weir: {second} received again: exiting without a final checkpoint");
    std::process::exit(exit_code(second));
}

/// The conventional exit status after a fatal signal.
fn exit_code(signal: &str) -> i32 {
    match signal {
        "SIGINT" => 130,
        _ => 143,
    }
}

/// `message` as one line of at most 4096 bytes (cut at a character boundary).
pub fn termination_message(message: &str) -> String {
    let mut line = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if line.len() > TERMINATION_MESSAGE_MAX {
        let mut cut = TERMINATION_MESSAGE_MAX;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line
}

/// Writes `message` (as one line) to the termination-message file at `path` if that file
/// exists and is writable — Kubernetes creates it in every container; elsewhere nothing
/// happens. Returns whether it was written.
pub fn write_termination_message(path: &Path, message: &str) -> bool {
    let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
    else {
        return false;
    };
    f.write_all(termination_message(message).as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_message_is_one_bounded_line() {
        let m = termination_message("refusing to start\n  chk-3: corrupt\n\nchk-2: no marker\n");
        assert_eq!(m, "refusing to start; chk-3: corrupt; chk-2: no marker");
        let long = "é".repeat(3000);
        let m = termination_message(&long);
        assert!(m.len() <= 4096 && m.len() > 4000, "{}", m.len());
    }

    #[test]
    fn writes_only_to_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("termination-log");
        assert!(!write_termination_message(&missing, "x"));
        assert!(!missing.exists());
        std::fs::write(&missing, "old content that is longer").unwrap();
        assert!(write_termination_message(&missing, "bad\nconfig"));
        assert_eq!(std::fs::read_to_string(&missing).unwrap(), "bad; config\n");
    }
}
