//! Running one command: `sh -c` in its own process group, stdout and stderr streamed line by
//! line to the log, and the whole group signalled on timeout (TERM, then KILL) or when the run
//! is dropped.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::LogSink;

/// How much of a step's log is kept for the run's `logs/<step>.txt` artifact.
const LOG_KEEP: usize = 16 * 1024 * 1024;
/// How long a group gets between TERM and KILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long output is still read after the command exits (a background child may hold the
/// pipes open).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// A step's log: lines go to the run's sink as they come and are kept for upload.
#[derive(Clone)]
pub(crate) struct StepLog {
    step: String,
    sink: LogSink,
    kept: Arc<Mutex<(String, bool)>>,
}

impl StepLog {
    /// A log for `step` writing to `sink`.
    pub fn new(step: &str, sink: LogSink) -> Self {
        Self {
            step: step.to_string(),
            sink,
            kept: Arc::new(Mutex::new((String::new(), false))),
        }
    }

    /// Emits one line.
    pub fn line(&self, line: &str) {
        (self.sink)(&self.step, line);
        if let Ok(mut k) = self.kept.lock() {
            if k.0.len() + line.len() < LOG_KEEP {
                k.0.push_str(line);
                k.0.push('\n');
            } else if !k.1 {
                k.1 = true;
                k.0.push_str("[loopml: log truncated]\n");
            }
        }
    }

    /// The step's name.
    pub fn step(&self) -> &str {
        &self.step
    }

    /// The kept text.
    pub fn text(&self) -> String {
        self.kept.lock().map(|k| k.0.clone()).unwrap_or_default()
    }
}

/// How a command ended.
#[derive(Debug)]
pub(crate) enum Exit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by a signal.
    Signal,
    /// It ran past its timeout and its process group was killed.
    TimedOut,
    /// It could not be started.
    Spawn(std::io::Error),
}

/// Sends `signal` to process group `pgid` (through the shell's `kill`, which every machine
/// that runs `sh -c` has).
fn signal_group(pgid: u32, signal: &str) {
    let _ = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -s {signal} -- -{pgid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Kills the process group when dropped while armed (the run was cancelled mid-step).
struct GroupGuard {
    pgid: u32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, "KILL");
        }
    }
}

async fn pump<R: AsyncRead + Unpin>(r: Option<R>, log: &StepLog) {
    let Some(r) = r else { return };
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                log.line(&String::from_utf8_lossy(&buf));
            }
        }
    }
}

/// Runs `command` with `sh -c` in `dir` with `env` added, up to `timeout`.
pub(crate) async fn run_command(
    command: &str,
    dir: &Path,
    env: &[(String, String)],
    timeout: Duration,
    log: &StepLog,
) -> Exit {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Exit::Spawn(e),
    };
    let Some(pid) = child.id() else {
        return Exit::Spawn(std::io::Error::other(
            "the command exited before it started",
        ));
    };
    let mut guard = GroupGuard {
        pgid: pid,
        armed: true,
    };
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let pumps = async {
        tokio::join!(pump(out, log), pump(err, log));
    };
    let mut pumps = std::pin::pin!(pumps);
    let mut pumped = false;
    let deadline = tokio::time::sleep(timeout);
    let mut deadline = std::pin::pin!(deadline);
    let status = loop {
        tokio::select! {
            s = child.wait() => break Some(s),
            () = &mut pumps, if !pumped => pumped = true,
            () = &mut deadline => break None,
        }
    };
    let exit = match status {
        Some(Ok(s)) => match s.code() {
            Some(c) => Exit::Code(c),
            None => Exit::Signal,
        },
        Some(Err(e)) => Exit::Spawn(e),
        None => {
            signal_group(pid, "TERM");
            if tokio::time::timeout(KILL_GRACE, child.wait())
                .await
                .is_err()
            {
                signal_group(pid, "KILL");
                let _ = child.wait().await;
            }
            Exit::TimedOut
        }
    };
    if !pumped && tokio::time::timeout(DRAIN_GRACE, &mut pumps).await.is_err() {
        // Something the command started in the background still holds its output open.
        signal_group(pid, "KILL");
        let _ = tokio::time::timeout(Duration::from_millis(500), &mut pumps).await;
    }
    guard.armed = false;
    exit
}
