//! Who reaps which child. Under `sidekick exec` the supervisor reaps every
//! exited process (`waitpid(-1)`: it is PID 1 or a subreaper), while a
//! `check_cmd` or `reload_cmd` runs on another thread and waits for its own
//! shell. A command is spawned through [`spawn`], which notes its pid; the
//! supervisor hands the status of a noted pid back through [`claim`] instead
//! of dropping it as an orphan's, and the command's [`try_wait`] finds it.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard};

/// Pids of running commands, each with its status once the supervisor reaped it.
static COMMANDS: Mutex<Vec<(u32, Option<ExitStatus>)>> = Mutex::new(Vec::new());

fn commands() -> MutexGuard<'static, Vec<(u32, Option<ExitStatus>)>> {
    // A panic while holding the lock leaves the list as it was: still usable.
    COMMANDS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spawns `command` and notes its pid, under the lock the supervisor reaps
/// under, so it cannot reap the command before the pid is noted.
pub(crate) fn spawn(command: &mut Command) -> io::Result<Child> {
    let mut list = commands();
    let child = command.spawn()?;
    list.push((child.id(), None));
    Ok(child)
}

/// `child.try_wait()`, also when the supervisor reaped it first.
pub(crate) fn try_wait(child: &mut Child) -> io::Result<Option<ExitStatus>> {
    let pid = child.id();
    match child.try_wait() {
        Ok(Some(status)) => {
            forget(pid);
            Ok(Some(status))
        }
        Ok(None) => Ok(None),
        // ECHILD: reaped by the supervisor, whose status is noted.
        Err(e) => {
            let mut list = commands();
            match list.iter().position(|&(p, _)| p == pid) {
                Some(at) => match list[at].1 {
                    Some(status) => {
                        list.remove(at);
                        Ok(Some(status))
                    }
                    None => Ok(None),
                },
                None => Err(e),
            }
        }
    }
}

/// Drops the note of `pid` (a command that was waited for).
pub(crate) fn forget(pid: u32) {
    commands().retain(|&(p, _)| p != pid);
}

/// Holds the lock while the supervisor reaps, so [`spawn`] waits meanwhile.
pub(crate) struct Reaping(MutexGuard<'static, Vec<(u32, Option<ExitStatus>)>>);

/// Takes the lock for one round of reaping.
pub(crate) fn reaping() -> Reaping {
    Reaping(commands())
}

impl Reaping {
    /// The supervisor reaped `pid` with the raw wait status `raw`: true (and
    /// noted) when it is a command's.
    pub fn claim(&mut self, pid: i32, raw: i32) -> bool {
        match self
            .0
            .iter_mut()
            .find(|(p, _)| i64::from(*p) == i64::from(pid))
        {
            Some(entry) => {
                entry.1 = Some(ExitStatus::from_raw(raw));
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_reaped_by_someone_else_reaches_the_command() {
        let mut child = spawn(Command::new("true").stdout(std::process::Stdio::null())).unwrap();
        let pid = child.id() as i32;
        // Reap it as the supervisor would.
        let status = loop {
            match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => break code << 8,
                Ok(_) => continue,
                Err(e) => panic!("{e}"),
            }
        };
        assert!(reaping().claim(pid, status));
        let got = try_wait(&mut child).unwrap().unwrap();
        assert!(got.success());
        assert!(!reaping().claim(pid, 0), "forgotten once waited for");
    }
}
