//! Settings and where each one comes from.
//!
//! Every setting is one field: of [`Settings`] for the core, or of its
//! backend's group in `backend.rs` ([`BackendOptions`]). The field's clap
//! attributes make it a flag with a `SIDEKICK_*` environment variable, its
//! serde attributes make it a settings-file key (the field's name, or confd's
//! dashed spelling). Defaults are written once, in `impl Default for Settings`
//! (backend groups default to "not set" and leave the rest to the backend).
//!
//! One rule merges them: a flag wins, then its environment variable (clap
//! reads both), then the settings file, then the default. [`Settings::load`]
//! applies it bottom up: it starts from the defaults, reads the file over them
//! (keys the file leaves out keep their default), then lays over that what
//! flags and environment set (clap's `update_from_arg_matches` touches only
//! those). On/off settings take a value (`--noop=false`,
//! `SIDEKICK_NOOP=false`), so the environment can turn off what the file
//! turns on.
//!
//! The file is flat (every key at its top, as in confd) while the flags come in
//! groups. serde's `flatten` would join the two but reports a bad or unknown
//! key at line 1, so [`SettingsFile`] lets each group read the whole file for
//! its own keys, then rejects, at its line, a key that no group knows.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, ArgMatches, Args, FromArgMatches as _};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::backend::BackendOptions;
use crate::cli::LogFormat;
use crate::debounce::{parse_duration, Wait};
use crate::render::TemplateEngine;
use crate::source::{self, SourceSpec, TableKind};

/// Everything a run needs: the core settings here, each backend's in its
/// group under `backends`. Not `Debug`: the groups hold passwords and tokens,
/// which are never logged.
///
/// Built by [`Settings::load`] only; clap's `from_arg_matches` would ask for
/// every flag, since nothing here is optional to a run.
#[derive(Clone, Args, Deserialize)]
#[serde(default)]
pub(crate) struct Settings {
    /// Directory holding conf.d/ and templates/ [default: /etc/sidekick]
    #[arg(long, env = "SIDEKICK_CONFDIR", value_name = "DIR")]
    pub confdir: PathBuf,
    /// Settings file [default: CONFDIR/sidekick.toml, optional]
    #[arg(long, env = "SIDEKICK_CONFIG_FILE", value_name = "FILE")]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// Backend to read keys from: file, env, etcdv3, consul, rancher, kubernetes, zookeeper, vault [default: file]
    #[arg(long, env = "SIDEKICK_BACKEND", value_name = "NAME")]
    pub backend: String,
    /// Debounce: render after MIN of quiet, at most MAX after the first change ("2s:10s").
    /// Resources may set their own.
    #[arg(long, env = "SIDEKICK_WAIT", value_name = "MIN:MAX", value_parser = Wait::parse)]
    #[serde(deserialize_with = "parse_wait")]
    pub wait: Option<Wait>,
    /// Key prefix joined in front of every resource's prefix
    #[arg(long, env = "SIDEKICK_PREFIX", value_name = "P")]
    pub prefix: String,
    /// Render once and exit; non-zero when any resource failed
    #[arg(long, env = "SIDEKICK_ONETIME", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub onetime: bool,
    /// Watch the backend for changes instead of polling
    #[arg(long, env = "SIDEKICK_WATCH", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub watch: bool,
    /// Seconds between polls when not watching [default: 600]
    #[arg(long, env = "SIDEKICK_INTERVAL", value_name = "SECS")]
    pub interval: u64,
    /// Render and compare, but write nothing and run no command; --onetime
    /// exits 2 when a file would change
    #[arg(long, env = "SIDEKICK_NOOP", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub noop: bool,
    /// Print a unified diff of every change (with --noop: what would change)
    #[arg(long, env = "SIDEKICK_DIFF", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub diff: bool,
    /// Write files but skip check and reload commands
    #[arg(long, env = "SIDEKICK_SYNC_ONLY", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    #[serde(alias = "sync-only")]
    pub sync_only: bool,
    /// Keep the stage file when a check fails, for inspection
    #[arg(long, env = "SIDEKICK_KEEP_STAGE_FILE", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    #[serde(alias = "keep-stage-file")]
    pub keep_stage_file: bool,
    /// Log level: error, warn, info, debug, trace, or target=level,... [default: info]
    #[arg(long, env = "SIDEKICK_LOG_LEVEL", value_name = "LEVEL")]
    #[serde(alias = "log-level")]
    pub log_level: String,
    /// Log line format [default: text]
    #[arg(long, env = "SIDEKICK_LOG_FORMAT", value_name = "FORMAT")]
    #[serde(alias = "log-format")]
    pub log_format: LogFormat,
    /// Template language of resources that name none in `engine`: go (confd's
    /// templates unchanged) or tera [default: tera]
    #[arg(long, env = "SIDEKICK_TEMPLATE_ENGINE", value_name = "ENGINE")]
    #[serde(alias = "template-engine")]
    pub template_engine: TemplateEngine,
    /// Serve /healthz, /readyz and /metrics (Prometheus) on this address
    /// ("127.0.0.1:9100"); off when not given
    #[arg(long, env = "SIDEKICK_METRICS_ADDR", value_name = "ADDR")]
    #[serde(alias = "metrics-addr")]
    pub metrics_addr: Option<String>,
    /// /readyz answers 503 once the backend has been unreachable this long [default: 60s]
    #[arg(long, env = "SIDEKICK_READY_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(alias = "ready-timeout", deserialize_with = "duration_setting")]
    pub ready_timeout: Duration,
    /// How long a check_cmd may run before it is stopped and the resource fails;
    /// resources may set their own `check_cmd_timeout` [default: 30s]
    #[arg(long, env = "SIDEKICK_CHECK_CMD_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(alias = "check-cmd-timeout", deserialize_with = "duration_setting")]
    pub check_cmd_timeout: Duration,
    /// How long a reload_cmd (or reload_url) may take before it is stopped;
    /// resources may set their own `reload_cmd_timeout` [default: 60s]
    #[arg(long, env = "SIDEKICK_RELOAD_CMD_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(alias = "reload-cmd-timeout", deserialize_with = "duration_setting")]
    pub reload_cmd_timeout: Duration,
    /// Each backend's settings, one group (and `--help` heading) per backend;
    /// their keys are read by `BackendOptions::read`.
    #[command(flatten)]
    #[serde(skip)]
    pub backends: BackendOptions,
    /// The `[backends.NAME]` tables of the settings file (`source.rs`), by name.
    #[arg(skip)]
    #[serde(skip)]
    pub named: Vec<(String, SourceSpec)>,
}

impl Default for Settings {
    /// What applies when no flag, environment variable or settings-file key
    /// says otherwise. Keep the `[default: ...]` in the flags' help in step.
    fn default() -> Settings {
        Settings {
            confdir: PathBuf::from("/etc/sidekick"),
            config_file: None,
            backend: "file".to_string(),
            wait: None,
            prefix: String::new(),
            onetime: false,
            watch: false,
            // Seconds, as in confd.
            interval: 600,
            noop: false,
            diff: false,
            sync_only: false,
            keep_stage_file: false,
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            template_engine: TemplateEngine::Tera,
            metrics_addr: None,
            ready_timeout: Duration::from_secs(60),
            check_cmd_timeout: Duration::from_secs(30),
            reload_cmd_timeout: Duration::from_secs(60),
            backends: BackendOptions::default(),
            named: Vec::new(),
        }
    }
}

/// A settings file that cannot be read or parsed, or flags clap parsed but
/// could not hand over.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(transparent)]
    Flags(#[from] clap::Error),
}

impl Settings {
    /// Flags and environment (`matches`, from [`crate::cli::parse`]) over the
    /// settings file over the defaults. The file is `--config-file`, or
    /// `CONFDIR/sidekick.toml` when present.
    pub fn load(matches: &ArgMatches) -> Result<Settings, ConfigError> {
        let mut settings = Settings::default();
        settings.update_from_arg_matches(matches)?;
        // Flags and environment alone say where the file is; a confdir the
        // file names applies from then on.
        // Without --config-file: CONFDIR/sidekick.toml, else confd's
        // CONFDIR/confd.toml, when there.
        let path = match &settings.config_file {
            Some(path) => Some(path.clone()),
            None => ["sidekick.toml", "confd.toml"]
                .iter()
                .map(|name| settings.confdir.join(name))
                .find(|p| p.exists()),
        };
        if let Some(path) = path {
            settings = Settings::read_file(&path)?;
            settings.update_from_arg_matches(matches)?;
        }
        // Absolute paths, so file events and template paths compare equal.
        if let Ok(abs) = settings.confdir.canonicalize() {
            settings.confdir = abs;
        }
        Ok(settings)
    }

    /// conf.d/ under the confdir.
    pub fn confd_dir(&self) -> PathBuf {
        self.confdir.join("conf.d")
    }

    /// templates/ under the confdir.
    pub fn templates_dir(&self) -> PathBuf {
        self.confdir.join("templates")
    }

    fn read_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut settings = Settings::from_toml(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        for name in source::named_tables(&text) {
            let header = format!("backends.{name}");
            match source::read_table(path, &text, &header, TableKind::Named) {
                Ok(Some(spec)) => settings.named.push((name, spec)),
                Ok(None) => {}
                Err(e) => {
                    return Err(ConfigError::Parse {
                        path: path.to_path_buf(),
                        message: format!("line {}: {}", e.line, e.message),
                    })
                }
            }
        }
        Ok(settings)
    }

    /// The settings file over the defaults: the core keys, then each group's.
    fn from_toml(text: &str) -> Result<Settings, toml::de::Error> {
        let mut file = SettingsFile::new(text);
        let mut settings: Settings = file.read();
        settings.backends = BackendOptions::read(&mut file);
        let confd: ConfdOnlyKeys = file.read();
        // `[backends.NAME]` tables: read by `read_file`, one by one.
        let _: NamedTables = file.read();
        let settings = file.finish(settings)?;
        confd.warn();
        Ok(settings)
    }
}

/// The `backends` key of the settings file, whose tables `source.rs` reads.
#[derive(Default, Deserialize)]
#[serde(default)]
struct NamedTables {
    #[allow(dead_code)] // Read only so that the key is known.
    backends: Option<toml::Table>,
}

/// Keys of confd's `confd.toml` that sidekick has no setting for: the ones of
/// backends it does not have (Vault, DynamoDB, Redis), `basic_auth` (etcd
/// and Consul take `username`/`password` as given), `client_insecure` (TLS
/// is always checked) and `filter`. They are accepted, so that a confd.toml
/// loads unchanged, and each set one is named in a warning.
#[derive(Default, Deserialize)]
#[serde(default)]
struct ConfdOnlyKeys {
    auth_type: Option<toml::Value>,
    basic_auth: Option<toml::Value>,
    client_insecure: Option<toml::Value>,
    table: Option<toml::Value>,
    separator: Option<toml::Value>,
    app_id: Option<toml::Value>,
    user_id: Option<toml::Value>,
    role_id: Option<toml::Value>,
    secret_id: Option<toml::Value>,
    path: Option<toml::Value>,
    filter: Option<toml::Value>,
}

impl ConfdOnlyKeys {
    fn warn(&self) {
        let set = [
            ("auth_type", &self.auth_type),
            ("basic_auth", &self.basic_auth),
            ("client_insecure", &self.client_insecure),
            ("table", &self.table),
            ("separator", &self.separator),
            ("app_id", &self.app_id),
            ("user_id", &self.user_id),
            ("role_id", &self.role_id),
            ("secret_id", &self.secret_id),
            ("path", &self.path),
            ("filter", &self.filter),
        ];
        for (key, value) in set {
            if value.is_some() {
                tracing::warn!(key, "confd setting has no effect in sidekick; ignored");
            }
        }
    }
}

/// `wait = "2s:10s"` in the settings file, parsed as `--wait` is.
/// A duration setting as the file writes it ("30s", "2m").
fn duration_setting<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_duration(&String::deserialize(d)?).map_err(de::Error::custom)
}

fn parse_wait<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Wait>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|text| Wait::parse(&text).map_err(de::Error::custom))
        .transpose()
}

/// A settings file read group by group (see the module doc). Each group takes
/// its own keys from the whole file; the first error is kept for
/// [`finish`](Self::finish), which also rejects the keys no group took.
pub(crate) struct SettingsFile<'a> {
    text: &'a str,
    known: Vec<&'static str>,
    error: Option<toml::de::Error>,
}

impl<'a> SettingsFile<'a> {
    /// A file's text, to be read group by group.
    pub fn new(text: &'a str) -> SettingsFile<'a> {
        SettingsFile {
            text,
            known: Vec::new(),
            error: None,
        }
    }

    /// One group's keys, over its defaults. On an error the group keeps its
    /// defaults and `finish` reports the error.
    pub fn read<G: DeserializeOwned + Default>(&mut self) -> G {
        self.known.extend_from_slice(keys_of::<G>());
        toml::from_str(self.text).unwrap_or_else(|e| {
            self.error.get_or_insert(e);
            G::default()
        })
    }

    /// `value`, or the first error: a key that no group knows (a misspelt key
    /// is the likelier mistake), else a bad value.
    pub fn finish<T>(self, value: T) -> Result<T, toml::de::Error> {
        KnownKeys(&self.known).deserialize(toml::Deserializer::parse(self.text)?)?;
        match self.error {
            Some(e) => Err(e),
            None => Ok(value),
        }
    }
}

/// The keys a derived `Deserialize` struct accepts (field names and
/// aliases), which serde's derive passes to `deserialize_struct`.
fn keys_of<G: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe(&'static [&'static str]);
    impl<'de> Deserializer<'de> for &mut Probe {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut probe = Probe(&[]);
    // Always the "probed" error: the probe only wants the field list.
    let _ = G::deserialize(&mut probe);
    probe.0
}

/// Checks every top-level key of the file against `known`. The error comes
/// from the key's own deserialization, so toml marks the key's line.
struct KnownKeys<'k>(&'k [&'static str]);

impl<'de> DeserializeSeed<'de> for KnownKeys<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for KnownKeys<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a table of settings")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Key(self.0))?.is_some() {
            map.next_value::<de::IgnoredAny>()?;
        }
        Ok(())
    }
}

/// One key of [`KnownKeys`].
#[derive(Clone, Copy)]
struct Key<'k>(&'k [&'static str]);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let key = String::deserialize(d)?;
        if self.0.contains(&key.as_str()) {
            return Ok(());
        }
        let expected: Vec<String> = self.0.iter().map(|k| format!("`{k}`")).collect();
        Err(de::Error::custom(format_args!(
            "unknown field `{key}`, expected one of {}",
            expected.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(args: &[&str]) -> ArgMatches {
        crate::cli::command()
            .try_get_matches_from(std::iter::once("sidekick").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn flags_win_over_file() {
        let mut s =
            Settings::from_toml("backend = \"file\"\nprefix = \"/p\"\nlog-level = \"debug\"\n")
                .unwrap();
        s.update_from_arg_matches(&matches(&["--backend", "env"]))
            .unwrap();
        assert_eq!(s.backend, "env");
        assert_eq!(s.prefix, "/p");
        assert_eq!(s.log_level, "debug");
        assert_eq!(s.interval, 600);
    }

    #[test]
    fn flag_false_wins_over_file_true() {
        let mut s = Settings::from_toml("noop = true\nwatch = true\n").unwrap();
        s.update_from_arg_matches(&matches(&["--noop=false"]))
            .unwrap();
        assert!(!s.noop);
        assert!(s.watch);
    }

    #[test]
    fn unknown_setting_names_line() {
        let err = Settings::from_toml("backend = \"file\"\nbogus = 1\n")
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn bad_value_names_line_in_any_group() {
        for text in [
            "backend = \"file\"\ninterval = \"soon\"\n",
            "backend = \"file\"\nservices-file = 3\n",
            "backend = \"file\"\nwait = \"2s:1s\"\n",
        ] {
            let msg = Settings::from_toml(text).err().unwrap().to_string();
            assert!(msg.contains("line 2"), "{msg}");
        }
    }

    /// Every key (and confd spelling) the settings file took before the
    /// settings became one struct still lands where it did.
    #[cfg(all(
        feature = "etcd",
        feature = "consul",
        feature = "rancher",
        feature = "kubernetes"
    ))]
    #[test]
    fn every_settings_file_key_is_accepted() {
        for (key, value) in [
            ("confdir", "\"/c\""),
            ("backend", "\"env\""),
            ("nodes", "[\"n\"]"),
            ("node", "[\"n\"]"),
            ("prefix", "\"/p\""),
            ("wait", "\"1s:2s\""),
            ("file", "[\"f\"]"),
            ("files", "[\"f\"]"),
            ("services_file", "\"s\""),
            ("services-file", "\"s\""),
            ("onetime", "true"),
            ("watch", "true"),
            ("interval", "5"),
            ("noop", "true"),
            ("diff", "true"),
            ("sync_only", "true"),
            ("sync-only", "true"),
            ("keep_stage_file", "true"),
            ("keep-stage-file", "true"),
            ("username", "\"u\""),
            ("password", "\"p\""),
            ("client_cert", "\"c\""),
            ("client-cert", "\"c\""),
            ("client_key", "\"k\""),
            ("client-key", "\"k\""),
            ("client_ca_keys", "\"ca\""),
            ("client-ca-keys", "\"ca\""),
            ("auth_token", "\"t\""),
            ("auth-token", "\"t\""),
            ("datacenter", "\"dc\""),
            ("kubeconfig", "\"kc\""),
            ("namespace", "\"ns\""),
            ("all_namespaces", "true"),
            ("all-namespaces", "true"),
            ("kube_label", "[\"app=web\"]"),
            ("kube-label", "[\"app=web\"]"),
            ("listen", "\"l\""),
            ("self", "\"me\""),
            ("log_level", "\"debug\""),
            ("log-level", "\"debug\""),
            ("log_format", "\"json\""),
            ("log-format", "\"json\""),
        ] {
            let s = Settings::from_toml(&format!("{key} = {value}\n")).unwrap();
            let o = &s.backends;
            let set = match key.replace('-', "_").as_str() {
                "confdir" => s.confdir == Path::new("/c"),
                "backend" => s.backend == "env",
                "nodes" | "node" => o.connection.nodes == ["n"],
                "prefix" => s.prefix == "/p",
                "wait" => s.wait.is_some(),
                "file" | "files" => o.file.files == [PathBuf::from("f")],
                "services_file" => o.file.services_file.is_some(),
                "onetime" => s.onetime,
                "watch" => s.watch,
                "interval" => s.interval == 5,
                "noop" => s.noop,
                "diff" => s.diff,
                "sync_only" => s.sync_only,
                "keep_stage_file" => s.keep_stage_file,
                "username" => o.etcd.username.as_deref() == Some("u"),
                "password" => o.etcd.password.as_deref() == Some("p"),
                "client_cert" => o.tls.client_cert.is_some(),
                "client_key" => o.tls.client_key.is_some(),
                "client_ca_keys" => o.tls.client_ca_keys.is_some(),
                "auth_token" => o.consul.auth_token.as_deref() == Some("t"),
                "datacenter" => o.consul.datacenter.as_deref() == Some("dc"),
                "kubeconfig" => o.kubernetes.kubeconfig.is_some(),
                "namespace" => o.kubernetes.namespace.as_deref() == Some("ns"),
                "all_namespaces" => o.kubernetes.all_namespaces,
                "kube_label" => o.kubernetes.kube_label == ["app=web"],
                "listen" => o.rancher.listen.as_deref() == Some("l"),
                "self" => o.rancher.self_container.as_deref() == Some("me"),
                "log_level" => s.log_level == "debug",
                "log_format" => s.log_format == LogFormat::Json,
                other => panic!("no check for {other}"),
            };
            assert!(set, "{key} = {value} was not read");
        }
        // `config_file` is where the file is, not a setting in it.
        assert!(Settings::from_toml("config_file = \"x\"\n").is_err());
    }

    /// The example of confd's configuration guide, unchanged.
    #[cfg(feature = "etcd")]
    #[test]
    fn confd_toml_from_confds_docs_loads() {
        let text = "backend = \"etcd\"\nclient_cert = \"/etc/confd/ssl/client.crt\"\nclient_key = \"/etc/confd/ssl/client.key\"\nconfdir = \"/etc/confd\"\nlog-level = \"debug\"\ninterval = 600\nnodes = [\n  \"http://127.0.0.1:4001\",\n]\nnoop = false\nprefix = \"/production\"\nscheme = \"https\"\nsrv_domain = \"etcd.example.com\"\n";
        let s = Settings::from_toml(text).unwrap();
        assert_eq!(s.backend, "etcd");
        assert_eq!(s.prefix, "/production");
        assert_eq!(s.log_level, "debug");
        assert_eq!(s.backends.connection.nodes, ["http://127.0.0.1:4001"]);
        assert_eq!(s.backends.connection.scheme.as_deref(), Some("https"));
        assert_eq!(
            s.backends.connection.srv_domain.as_deref(),
            Some("etcd.example.com")
        );
        for key in [
            "srv_record = \"_etcd-client._tcp.example.com\"",
            "client_cakeys = \"/ca.pem\"",
            "sync-only = true",
            "watch = true",
            "basic_auth = true",
            "filter = \"*\"",
            "auth_type = \"token\"",
            "template_engine = \"go\"",
        ] {
            Settings::from_toml(&format!("{key}\n")).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
        let s = Settings::from_toml("template_engine = \"go\"\n").unwrap();
        assert_eq!(s.template_engine, TemplateEngine::Go);
        assert!(Settings::from_toml("template_engine = \"jinja\"\n").is_err());
    }

    #[test]
    fn command_line_is_consistent() {
        crate::cli::command().debug_assert();
    }
}
