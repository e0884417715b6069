//! Telling an executor that sidekick does not own to pick up a new file: a
//! signal to the process named by a pid file or by its name (sidecar shape).

use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Whom a resource's `reload_signal` goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// The pid in this file, read at signal time so a restarted executor is found.
    PidFile(PathBuf),
    /// Processes whose comm or argv[0] is this name (shared process namespace);
    /// only the top-most of a tree of matches (nginx's master, not its workers).
    Process(String),
    /// The child `sidekick exec` supervises.
    Child,
}

/// Why a signal was not sent. Never a crash, and never a signal to a guess.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error("pid file {}: {source}", path.display())]
    PidFileRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pid file {}: {content:?} is not a process id", path.display())]
    PidFileParse { path: PathBuf, content: String },
    #[error("pid file {}: process {pid} is not running (stale pid file)", path.display())]
    Stale { path: PathBuf, pid: i32 },
    #[error("no running process named {0:?}")]
    NoProcess(String),
    #[error("cannot list processes in /proc: {0}")]
    Proc(std::io::Error),
    #[error("cannot send {signal} to {pid}: {source}")]
    Kill {
        signal: Signal,
        pid: i32,
        source: nix::Error,
    },
}

/// Parses "SIGHUP", "HUP", "hup" or a number like "1".
pub(crate) fn parse_signal(text: &str) -> Result<Signal, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("{n} is not a signal number"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("{text:?} is not a signal name like \"SIGHUP\" or \"HUP\""))
}

/// Sends `signal` to the processes `target` names; returns the pids signalled.
/// `Target::Child` is the supervisor's business and is not handled here.
pub(crate) fn send(signal: Signal, target: &Target) -> Result<Vec<i32>, ReloadError> {
    let pids = match target {
        Target::PidFile(path) => vec![pid_from_file(path)?],
        Target::Process(name) => find_process(name)?,
        Target::Child => return Ok(Vec::new()),
    };
    for &pid in &pids {
        kill(Pid::from_raw(pid), signal).map_err(|source| ReloadError::Kill {
            signal,
            pid,
            source,
        })?;
    }
    Ok(pids)
}

fn pid_from_file(path: &Path) -> Result<i32, ReloadError> {
    let content = std::fs::read_to_string(path).map_err(|source| ReloadError::PidFileRead {
        path: path.to_path_buf(),
        source,
    })?;
    let pid = content
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| ReloadError::PidFileParse {
            path: path.to_path_buf(),
            content: content.trim().chars().take(40).collect(),
        })?;
    // Signal 0 checks that the process exists without touching it.
    match kill(Pid::from_raw(pid), None) {
        Err(nix::errno::Errno::ESRCH) => Err(ReloadError::Stale {
            path: path.to_path_buf(),
            pid,
        }),
        _ => Ok(pid),
    }
}

/// One process as /proc shows it.
struct ProcInfo {
    pid: i32,
    ppid: i32,
    matches: bool,
}

fn find_process(name: &str) -> Result<Vec<i32>, ReloadError> {
    let me = std::process::id() as i32;
    let mut procs = Vec::new();
    for entry in std::fs::read_dir("/proc").map_err(ReloadError::Proc)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // A process may exit while we look: skip what we cannot read.
        // comm may be cut mid-character by the kernel: compare bytes.
        let Ok(stat) = std::fs::read(entry.path().join("stat")) else {
            continue;
        };
        let Some((comm, ppid)) = parse_stat(&stat) else {
            continue;
        };
        let argv0 = std::fs::read(entry.path().join("cmdline"))
            .ok()
            .and_then(|c| {
                c.split(|&b| b == 0)
                    .next()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
            })
            .unwrap_or_default();
        let base = argv0.rsplit('/').next().unwrap_or("");
        // The kernel truncates comm to 15 bytes.
        let comm_match =
            comm == name.as_bytes() || (name.len() > 15 && comm == &name.as_bytes()[..15]);
        let matches = pid != me && (comm_match || base == name);
        procs.push(ProcInfo { pid, ppid, matches });
    }
    let matched: Vec<&ProcInfo> = procs.iter().filter(|p| p.matches).collect();
    let top: Vec<i32> = matched
        .iter()
        .filter(|p| !matched.iter().any(|q| q.pid == p.ppid))
        .map(|p| p.pid)
        .collect();
    if top.is_empty() {
        return Err(ReloadError::NoProcess(name.to_string()));
    }
    Ok(top)
}

/// `(comm, ppid)` from /proc/PID/stat; comm may hold spaces, parentheses and
/// (cut by the kernel) half a UTF-8 character.
fn parse_stat(stat: &[u8]) -> Option<(&[u8], i32)> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let comm = stat.get(open + 1..close)?;
    let rest = std::str::from_utf8(stat.get(close + 2..)?).ok()?;
    let mut fields = rest.split(' ');
    let _state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((comm, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("SIGHUP"), Ok(Signal::SIGHUP));
        assert_eq!(parse_signal("hup"), Ok(Signal::SIGHUP));
        assert_eq!(parse_signal("1"), Ok(Signal::SIGHUP));
        assert_eq!(parse_signal("USR2"), Ok(Signal::SIGUSR2));
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("999").is_err());
    }

    #[test]
    fn stat_with_odd_comm() {
        assert_eq!(
            parse_stat(b"42 (my (odd) prog) S 7 42 42 0"),
            Some((&b"my (odd) prog"[..], 7))
        );
    }

    #[test]
    fn stale_and_bad_pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("app.pid");
        std::fs::write(&f, "not-a-pid\n").unwrap();
        assert!(matches!(
            pid_from_file(&f),
            Err(ReloadError::PidFileParse { .. })
        ));
        // pid_max is at most 2^22 on Linux: this pid cannot exist.
        std::fs::write(&f, "4194305\n").unwrap();
        assert!(matches!(pid_from_file(&f), Err(ReloadError::Stale { .. })));
        std::fs::write(&f, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(pid_from_file(&f).unwrap(), std::process::id() as i32);
        assert!(matches!(
            pid_from_file(&dir.path().join("missing.pid")),
            Err(ReloadError::PidFileRead { .. })
        ));
    }

    #[test]
    fn no_such_process() {
        assert!(matches!(
            find_process("no-such-process-xyz"),
            Err(ReloadError::NoProcess(_))
        ));
    }
}
