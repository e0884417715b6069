//! Command-line interface: every flag also reads a `SIDEKICK_*` environment
//! variable, and subcommands accept the same flags after their name.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// sidekick keeps an application's config files in step with its
/// service-discovery backend.
#[derive(Debug, Parser)]
#[command(name = "sidekick", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub flags: Flags,
}

/// What to run; without a subcommand sidekick renders (once, by polling or by
/// watching, as the flags say).
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Watch data files, templates and conf.d together; every save re-renders and
    /// prints a diff (file backend, watch on). With `-- CMD ARGS`, also runs CMD
    /// as `sidekick exec` does.
    Dev {
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Render every resource, then run CMD as a supervised child (init shape):
    /// signals are forwarded, zombies reaped, the child reloaded or restarted on
    /// change, and sidekick exits with the child's exit code.
    Exec {
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Serve a Rancher-metadata-compatible API from a YAML answers file (--file).
    MetadataServer,
}

/// How `exec` (and `dev -- CMD`) run the child.
#[derive(Debug, Default, Args)]
pub(crate) struct ExecArgs {
    /// Signal the child's whole process group, not just the child
    #[arg(long, env = "SIDEKICK_EXEC_GROUP")]
    pub exec_group: bool,
    /// How long to wait after SIGTERM before SIGKILL [default: 10s]
    #[arg(long, env = "SIDEKICK_KILL_TIMEOUT", value_name = "DURATION")]
    pub kill_timeout: Option<String>,
    /// The command to run, after `--`
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Output format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// Flags shared by every subcommand. All are optional here: the config file
/// fills what flags and environment leave unset, then defaults apply. On/off
/// flags are `Option<bool>` so `SIDEKICK_NOOP=false` (or `--noop=false`) can
/// turn off what the file turns on.
#[derive(Debug, Default, Args)]
pub(crate) struct Flags {
    /// Directory holding conf.d/ and templates/ [default: /etc/sidekick]
    #[arg(long, global = true, env = "SIDEKICK_CONFDIR", value_name = "DIR")]
    pub confdir: Option<PathBuf>,
    /// Settings file [default: CONFDIR/sidekick.toml, optional]
    #[arg(long, global = true, env = "SIDEKICK_CONFIG_FILE", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Backend to read keys from: file, env, etcdv3, consul, rancher, kubernetes
    #[arg(long, global = true, env = "SIDEKICK_BACKEND", value_name = "NAME")]
    pub backend: Option<String>,
    /// Backend address; repeatable (several endpoints of one cluster)
    #[arg(
        long = "node",
        global = true,
        env = "SIDEKICK_NODE",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub nodes: Vec<String>,
    /// Debounce: render after MIN of quiet, at most MAX after the first change ("2s:10s")
    #[arg(long, global = true, env = "SIDEKICK_WAIT", value_name = "MIN:MAX")]
    pub wait: Option<String>,
    /// Key prefix joined in front of every resource's prefix
    #[arg(long, global = true, env = "SIDEKICK_PREFIX", value_name = "P")]
    pub prefix: Option<String>,
    /// Data file or directory for the file backend (YAML, JSON, TOML); repeatable
    #[arg(
        long = "file",
        global = true,
        env = "SIDEKICK_FILE",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    pub files: Vec<PathBuf>,
    /// YAML/JSON/TOML file of services and their instances (file backend catalog)
    #[arg(
        long,
        global = true,
        env = "SIDEKICK_SERVICES_FILE",
        value_name = "PATH"
    )]
    pub services_file: Option<PathBuf>,
    /// Render once and exit; non-zero when any resource failed
    #[arg(long, global = true, env = "SIDEKICK_ONETIME", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub onetime: Option<bool>,
    /// Watch the backend for changes instead of polling
    #[arg(long, global = true, env = "SIDEKICK_WATCH", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub watch: Option<bool>,
    /// Seconds between polls when not watching [default: 600]
    #[arg(long, global = true, env = "SIDEKICK_INTERVAL", value_name = "SECS")]
    pub interval: Option<u64>,
    /// Render and compare, but write nothing and run no command
    #[arg(long, global = true, env = "SIDEKICK_NOOP", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub noop: Option<bool>,
    /// Print a unified diff of every change (with --noop: what would change)
    #[arg(long, global = true, env = "SIDEKICK_DIFF", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub diff: Option<bool>,
    /// Write files but skip check and reload commands
    #[arg(long, global = true, env = "SIDEKICK_SYNC_ONLY", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub sync_only: Option<bool>,
    /// Keep the stage file when a check fails, for inspection
    #[arg(long, global = true, env = "SIDEKICK_KEEP_STAGE_FILE", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub keep_stage_file: Option<bool>,
    /// User name for backends with auth (etcd)
    #[arg(long, global = true, env = "SIDEKICK_USERNAME", value_name = "USER")]
    pub username: Option<String>,
    /// Password for --username; never logged
    #[arg(
        long,
        global = true,
        env = "SIDEKICK_ETCD_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Client certificate (PEM) for TLS to the backend
    #[arg(long, global = true, env = "SIDEKICK_CLIENT_CERT", value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM) for TLS to the backend
    #[arg(long, global = true, env = "SIDEKICK_CLIENT_KEY", value_name = "FILE")]
    pub client_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) to verify the backend with
    #[arg(
        long,
        global = true,
        env = "SIDEKICK_CLIENT_CA_KEYS",
        value_name = "FILE"
    )]
    pub client_ca_keys: Option<PathBuf>,
    /// ACL token for Consul, sent as X-Consul-Token; never logged
    #[arg(
        long,
        global = true,
        env = "SIDEKICK_CONSUL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub auth_token: Option<String>,
    /// Consul datacenter to query
    #[arg(long, global = true, env = "SIDEKICK_DATACENTER", value_name = "DC")]
    pub datacenter: Option<String>,
    /// kubeconfig file for the kubernetes backend (default: in-cluster, then KUBECONFIG)
    #[arg(long, global = true, env = "SIDEKICK_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes namespace (default: the pod's own)
    #[arg(long, global = true, env = "SIDEKICK_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,
    /// Address to listen on (metadata-server)
    #[arg(long, global = true, env = "SIDEKICK_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Container the metadata server answers `self` for, whoever asks
    #[arg(
        long = "self",
        global = true,
        env = "SIDEKICK_SELF",
        value_name = "CONTAINER"
    )]
    pub self_container: Option<String>,
    /// Log level: error, warn, info, debug, trace [default: info]
    #[arg(long, global = true, env = "SIDEKICK_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log line format [default: text]
    #[arg(
        long,
        global = true,
        env = "SIDEKICK_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: Option<LogFormat>,
}
