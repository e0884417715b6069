//! Running `check_cmd` and `reload_cmd` through `sh -c`, as confd does.

use std::process::{Command, Stdio};

/// A command that could not run or exited non-zero; carries its output so the
/// log says why.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    #[error("`{cmd}` could not start: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` exited with {status}{}", output_suffix(.output))]
    Failed {
        cmd: String,
        status: String,
        output: String,
    },
}

fn output_suffix(output: &str) -> String {
    let trimmed = output.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!(": {trimmed}")
    }
}

/// Runs `cmd` with `sh -c`, waits, and returns its combined output.
pub(crate) fn run(cmd: &str) -> Result<String, CommandError> {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CommandError::Spawn {
            cmd: cmd.to_string(),
            source,
        })?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        tracing::debug!(cmd, output = output.trim(), "command succeeded");
        Ok(output)
    } else {
        Err(CommandError::Failed {
            cmd: cmd.to_string(),
            status: out.status.to_string(),
            output,
        })
    }
}
