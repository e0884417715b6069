//! Telling the executor, in one place: after a resource's new file has been
//! swapped in, [`after_swap`] runs its `reload_cmd`, sends its `reload_signal`
//! (to a pid file's or a named process, or to the supervised child), or queues
//! a restart of the child; then it makes the rename durable. Whoever asks
//! "where does reload happen" is answered here.

use nix::sys::signal::Signal;

use crate::command::{self, CommandError};
use crate::hook::{self, HookError};
use crate::metrics;
use crate::pipeline;
use crate::redact::Redactor;
use crate::reload::{self, ReloadError, Target};
use crate::resource::Resource;

/// What the supervised child should get once a pass is over (the event loop
/// owns the child, so the engine only queues these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildAction {
    /// Send the signal to the child (or its group).
    Signal(Signal),
    /// Stop the child with this signal and start it again.
    Restart(Signal),
}

/// How the executor may be told in this run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Telling {
    /// `--sync-only` or `--noop`: write (or compare) only, tell nobody.
    pub quiet: bool,
    /// Under `sidekick exec`: resources may signal or restart the child.
    pub exec: bool,
}

/// Why the executor was not told. The new file is in place in every case.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TellError {
    #[error("reload_cmd failed (the new file is in place): {0}")]
    Reload(#[source] CommandError),
    #[error("{0} (the new file is in place)")]
    Hook(#[source] HookError),
    #[error("reload_signal not sent: {0}")]
    Signal(#[source] ReloadError),
}

/// After `resource`'s destination was replaced: tell the executor as the
/// resource says, then fsync the destination's directory (off the path to the
/// executor: the rename is atomic, so a crash before this keeps the old, whole
/// file). Returns whether the executor was told to reload, for
/// `min_reload_interval`.
pub(crate) fn after_swap(
    resource: &Resource,
    telling: Telling,
    child: &mut Vec<ChildAction>,
    redact: &Redactor,
) -> Result<bool, TellError> {
    let told = tell(resource, telling, child, redact);
    pipeline::sync_dir(&resource.dest);
    told
}

fn tell(
    resource: &Resource,
    telling: Telling,
    child: &mut Vec<ChildAction>,
    redact: &Redactor,
) -> Result<bool, TellError> {
    if telling.quiet {
        return Ok(false);
    }
    let mut reloaded = false;
    if let Some(cmd) = &resource.reload_cmd {
        let spec = command::Spec {
            cmd,
            field: "reload_cmd",
            timeout: resource.reload_cmd_timeout,
        };
        command::run(spec, redact).map_err(TellError::Reload)?;
        metrics::reload(&resource.name, "command");
        reloaded = true;
    }
    if let Some(hook) = &resource.reload_url {
        let status = hook::call(hook, resource.reload_cmd_timeout).map_err(TellError::Hook)?;
        tracing::info!(resource = %resource.name, url = %hook.url, status, "reload_url called");
        metrics::reload(&resource.name, "url");
        reloaded = true;
    }
    if resource.restart && telling.exec {
        child.push(ChildAction::Restart(resource.kill_signal));
        metrics::reload(&resource.name, "restart");
        reloaded = true;
    } else if let (Some(sig), Some(target)) = (resource.reload_signal, &resource.target) {
        reloaded = true;
        if *target == Target::Child {
            child.push(ChildAction::Signal(sig));
        } else {
            let pids = reload::send(sig, target).map_err(TellError::Signal)?;
            tracing::info!(resource = %resource.name, signal = %sig, ?pids, "signalled executor");
        }
        metrics::reload(&resource.name, "signal");
    }
    Ok(reloaded)
}
