//! Turns client and watcher errors into [`BackendError`]s that say what was
//! refused or unreachable, and never carry object content.

use std::error::Error as StdError;

use kube::core::Status;
use kube::runtime::watcher;
use sidekick_backend::BackendError;

use crate::NAME;

/// The request that failed, for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op<'a> {
    /// `list` or `watch`.
    pub verb: &'static str,
    /// Resource as RBAC names it: `configmaps`, `endpointslices.discovery.k8s.io`.
    pub resource: &'static str,
    /// `None`: every namespace (a cluster-scope request).
    pub namespace: Option<&'a str>,
    /// API server URL.
    pub server: &'a str,
}

/// True for `410 Gone` in a watch: the resourceVersion left the server's
/// window. The watcher relists by itself; it is no failure.
pub(crate) fn is_gone(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => matches!(e, kube::Error::Api(s) if s.code == 410),
        watcher::Error::NoResourceVersion => false,
    }
}

/// Maps a watcher error; the verb comes from the phase that failed.
pub(crate) fn from_watcher(err: watcher::Error, op: Op<'_>) -> BackendError {
    match err {
        watcher::Error::InitialListFailed(e) => from_client(e, Op { verb: "list", ..op }),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => from_client(
            e,
            Op {
                verb: "watch",
                ..op
            },
        ),
        watcher::Error::WatchError(status) => from_status(
            &status,
            Op {
                verb: "watch",
                ..op
            },
        ),
        watcher::Error::NoResourceVersion => BackendError::Unavailable {
            backend: NAME,
            endpoint: op.server.to_string(),
            source: Box::new(Flat(format!(
                "{} list {} carries no resourceVersion",
                op.resource,
                scope_text(op.namespace)
            ))),
        },
    }
}

/// Maps a client error.
pub(crate) fn from_client(err: kube::Error, op: Op<'_>) -> BackendError {
    match err {
        kube::Error::Api(status) => from_status(&status, op),
        // serde_json may quote the offending value: keep only where it was.
        kube::Error::SerdeError(e) => BackendError::Unavailable {
            backend: NAME,
            endpoint: op.server.to_string(),
            source: Box::new(Flat(format!(
                "cannot decode the {} answer for {} (line {}, column {})",
                op.verb,
                op.resource,
                e.line(),
                e.column()
            ))),
        },
        other => BackendError::Unavailable {
            backend: NAME,
            endpoint: op.server.to_string(),
            source: Box::new(Flat(flatten(&other))),
        },
    }
}

fn from_status(status: &Status, op: Op<'_>) -> BackendError {
    match status.code {
        403 => BackendError::Denied {
            backend: NAME,
            message: forbidden_message(status, op),
        },
        401 => BackendError::Denied {
            backend: NAME,
            message: format!(
                "unauthorized: {} rejected the credentials (token missing, expired or invalid)",
                op.server
            ),
        },
        code => BackendError::Unavailable {
            backend: NAME,
            endpoint: op.server.to_string(),
            source: Box::new(Flat(format!(
                "{} {} {}: {code} {}: {}",
                op.verb,
                op.resource,
                scope_text(op.namespace),
                status.reason,
                status.message
            ))),
        },
    }
}

/// `forbidden: cannot watch configmaps in namespace default (grant get, list,
/// watch)`, plus the user the server named. The verb is the server's when its
/// message has the standard form (`... cannot watch resource ...`).
fn forbidden_message(status: &Status, op: Op<'_>) -> String {
    let verb = between(&status.message, "cannot ", " resource").unwrap_or(op.verb);
    let grant = match op.namespace {
        Some(_) => "grant get, list, watch",
        None => "grant get, list, watch in a ClusterRole, or list the namespaces with --namespace",
    };
    let mut message = format!(
        "forbidden: cannot {verb} {} {} ({grant})",
        op.resource,
        scope_text(op.namespace)
    );
    if let Some(user) = between(&status.message, "User \"", "\"") {
        message.push_str(&format!(" to User \"{user}\""));
    }
    message
}

/// `in namespace a`, or `in all namespaces (cluster scope)`.
fn scope_text(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "in all namespaces (cluster scope)".into(),
    }
}

/// The text between the first `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len]).filter(|s| !s.is_empty() && !s.contains(' '))
}

/// An error and its sources on one line.
fn flatten(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// A message standing in for a client error (already flattened or cleaned).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Flat(String);

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> Op<'static> {
        Op {
            verb: "list",
            resource: "configmaps",
            namespace: Some("default"),
            server: "https://k8s.example:6443/",
        }
    }

    fn status(code: u16, reason: &str, message: &str) -> Status {
        Status {
            code,
            reason: reason.into(),
            message: message.into(),
            ..Status::default()
        }
    }

    #[test]
    fn forbidden_names_verb_resource_namespace_and_user() {
        let s = status(
            403,
            "Forbidden",
            "configmaps is forbidden: User \"system:serviceaccount:default:sidekick\" cannot watch \
             resource \"configmaps\" in API group \"\" in the namespace \"default\"",
        );
        let e = from_watcher(watcher::Error::WatchError(Box::new(s)), op());
        assert!(matches!(e, BackendError::Denied { .. }));
        assert_eq!(
            e.to_string(),
            "kubernetes: forbidden: cannot watch configmaps in namespace default (grant get, \
             list, watch) to User \"system:serviceaccount:default:sidekick\""
        );
    }

    #[test]
    fn forbidden_without_standard_message_uses_phase_verb() {
        let e = from_watcher(
            watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status(
                403,
                "Forbidden",
                "nope",
            )))),
            op(),
        );
        assert_eq!(
            e.to_string(),
            "kubernetes: forbidden: cannot list configmaps in namespace default (grant get, list, watch)"
        );
    }

    #[test]
    fn forbidden_at_cluster_scope_says_so() {
        let s = status(
            403,
            "Forbidden",
            "secrets is forbidden: User \"u\" cannot list resource \"secrets\" in API group \"\" at the cluster scope",
        );
        let e = from_client(
            kube::Error::Api(Box::new(s)),
            Op {
                resource: "secrets",
                namespace: None,
                ..op()
            },
        );
        assert_eq!(
            e.to_string(),
            "kubernetes: forbidden: cannot list secrets in all namespaces (cluster scope) (grant \
             get, list, watch in a ClusterRole, or list the namespaces with --namespace) to User \"u\""
        );
    }

    #[test]
    fn gone_is_recognised() {
        let s = status(410, "Expired", "too old resource version: 1 (5)");
        assert!(is_gone(&watcher::Error::WatchError(Box::new(s))));
        assert!(!is_gone(&watcher::Error::NoResourceVersion));
    }

    #[test]
    fn unauthorized_is_denied() {
        let e = from_client(
            kube::Error::Api(Box::new(status(401, "Unauthorized", "Unauthorized"))),
            op(),
        );
        assert!(matches!(e, BackendError::Denied { .. }));
        assert!(e.to_string().contains("unauthorized"), "{e}");
    }
}
