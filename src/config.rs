//! Settings: flags win, then `SIDEKICK_*` environment variables (both read by
//! clap), then the config file, then defaults.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::{Flags, LogFormat};
use crate::debounce::Wait;

/// Where sidekick looks for conf.d/ and templates/ when nothing says otherwise.
pub(crate) const DEFAULT_CONFDIR: &str = "/etc/sidekick";
/// Poll interval in seconds, as in confd.
pub(crate) const DEFAULT_INTERVAL: u64 = 600;

/// The settings file: the same settings as the flags, in TOML. confd's dashed
/// spellings are accepted too so a confd.toml moves over.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSettings {
    confdir: Option<PathBuf>,
    backend: Option<String>,
    #[serde(alias = "node")]
    nodes: Option<Vec<String>>,
    prefix: Option<String>,
    wait: Option<String>,
    #[serde(alias = "files")]
    file: Option<Vec<PathBuf>>,
    #[serde(alias = "services-file")]
    services_file: Option<PathBuf>,
    onetime: Option<bool>,
    watch: Option<bool>,
    interval: Option<u64>,
    noop: Option<bool>,
    diff: Option<bool>,
    #[serde(alias = "sync-only")]
    sync_only: Option<bool>,
    #[serde(alias = "keep-stage-file")]
    keep_stage_file: Option<bool>,
    username: Option<String>,
    password: Option<String>,
    #[serde(alias = "client-cert")]
    client_cert: Option<PathBuf>,
    #[serde(alias = "client-key")]
    client_key: Option<PathBuf>,
    #[serde(alias = "client-ca-keys")]
    client_ca_keys: Option<PathBuf>,
    #[serde(alias = "auth-token")]
    auth_token: Option<String>,
    datacenter: Option<String>,
    kubeconfig: Option<PathBuf>,
    namespace: Option<String>,
    listen: Option<String>,
    #[serde(rename = "self")]
    self_container: Option<String>,
    #[serde(alias = "log-level")]
    log_level: Option<String>,
    #[serde(alias = "log-format")]
    log_format: Option<LogFormat>,
}

/// Everything a run needs, after merging and defaults.
// Some fields are read only by optional backends (cargo features).
#[cfg_attr(
    not(all(
        feature = "etcd",
        feature = "consul",
        feature = "rancher",
        feature = "kubernetes"
    )),
    allow(dead_code)
)]
#[derive(Clone)]
pub(crate) struct Settings {
    pub confdir: PathBuf,
    pub backend: String,
    pub nodes: Vec<String>,
    pub prefix: String,
    /// Global debounce; resources may set their own.
    pub wait: Option<Wait>,
    pub files: Vec<PathBuf>,
    pub services_file: Option<PathBuf>,
    pub onetime: bool,
    pub watch: bool,
    pub interval: u64,
    pub noop: bool,
    pub diff: bool,
    pub sync_only: bool,
    pub keep_stage_file: bool,
    pub username: Option<String>,
    /// Never logged: `Settings` is not printed with `{:?}` anywhere.
    pub password: Option<String>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub client_ca_keys: Option<PathBuf>,
    /// Never logged, like `password`.
    pub auth_token: Option<String>,
    pub datacenter: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub namespace: Option<String>,
    pub listen: Option<String>,
    pub self_container: Option<String>,
    pub log_level: String,
    pub log_format: LogFormat,
}

/// A settings file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Settings {
    /// Merges flags (already holding environment values) over the config file.
    /// The file is `--config-file`, or `CONFDIR/sidekick.toml` when present.
    pub fn load(flags: &Flags) -> Result<Settings, ConfigError> {
        let default_confdir = flags
            .confdir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFDIR));
        let file = match &flags.config_file {
            Some(path) => read_file(path)?,
            None => {
                let path = default_confdir.join("sidekick.toml");
                if path.exists() {
                    read_file(&path)?
                } else {
                    FileSettings::default()
                }
            }
        };
        let wait = flags.wait.clone().or(file.wait.clone());
        let mut settings = Settings::merge(flags, file);
        if let Some(w) = wait {
            settings.wait = Some(Wait::parse(&w).map_err(|message| ConfigError::Parse {
                path: PathBuf::from("--wait"),
                message,
            })?);
        }
        // Absolute paths, so file events and template paths compare equal.
        if let Ok(abs) = settings.confdir.canonicalize() {
            settings.confdir = abs;
        }
        Ok(settings)
    }

    fn merge(flags: &Flags, file: FileSettings) -> Settings {
        fn list<T: Clone>(flag: &[T], file: Option<Vec<T>>) -> Vec<T> {
            if flag.is_empty() {
                file.unwrap_or_default()
            } else {
                flag.to_vec()
            }
        }
        Settings {
            confdir: flags
                .confdir
                .clone()
                .or(file.confdir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFDIR)),
            backend: flags
                .backend
                .clone()
                .or(file.backend)
                .unwrap_or_else(|| "file".to_string()),
            nodes: list(&flags.nodes, file.nodes),
            prefix: flags.prefix.clone().or(file.prefix).unwrap_or_default(),
            wait: None,
            files: list(&flags.files, file.file),
            services_file: flags.services_file.clone().or(file.services_file),
            onetime: flags.onetime.or(file.onetime).unwrap_or(false),
            watch: flags.watch.or(file.watch).unwrap_or(false),
            interval: flags.interval.or(file.interval).unwrap_or(DEFAULT_INTERVAL),
            noop: flags.noop.or(file.noop).unwrap_or(false),
            diff: flags.diff.or(file.diff).unwrap_or(false),
            sync_only: flags.sync_only.or(file.sync_only).unwrap_or(false),
            keep_stage_file: flags
                .keep_stage_file
                .or(file.keep_stage_file)
                .unwrap_or(false),
            username: flags.username.clone().or(file.username),
            password: flags.password.clone().or(file.password),
            client_cert: flags.client_cert.clone().or(file.client_cert),
            client_key: flags.client_key.clone().or(file.client_key),
            client_ca_keys: flags.client_ca_keys.clone().or(file.client_ca_keys),
            auth_token: flags.auth_token.clone().or(file.auth_token),
            datacenter: flags.datacenter.clone().or(file.datacenter),
            kubeconfig: flags.kubeconfig.clone().or(file.kubeconfig),
            namespace: flags.namespace.clone().or(file.namespace),
            listen: flags.listen.clone().or(file.listen),
            self_container: flags.self_container.clone().or(file.self_container),
            log_level: flags
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_string()),
            log_format: flags
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
        }
    }

    /// conf.d/ under the confdir.
    pub fn confd_dir(&self) -> PathBuf {
        self.confdir.join("conf.d")
    }

    /// templates/ under the confdir.
    pub fn templates_dir(&self) -> PathBuf {
        self.confdir.join("templates")
    }
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file() {
        let flags = Flags {
            backend: Some("env".into()),
            ..Flags::default()
        };
        let file: FileSettings =
            toml::from_str("backend = \"file\"\nprefix = \"/p\"\nlog-level = \"debug\"\n").unwrap();
        let s = Settings::merge(&flags, file);
        assert_eq!(s.backend, "env");
        assert_eq!(s.prefix, "/p");
        assert_eq!(s.log_level, "debug");
        assert_eq!(s.interval, DEFAULT_INTERVAL);
    }

    #[test]
    fn unknown_setting_names_line() {
        let err = toml::from_str::<FileSettings>("backend = \"file\"\nbogus = 1\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
    }
}
