//! Command-line interface: the subcommands, plus a flag for every setting
//! (`Settings` in `config.rs`), each of which also reads a `SIDEKICK_*`
//! environment variable and is accepted after a subcommand's name too.

use clap::{ArgMatches, Args, FromArgMatches as _, Parser, Subcommand, ValueEnum};

use crate::config::Settings;

/// sidekick keeps an application's config files in step with its
/// service-discovery backend.
#[derive(Debug, Parser)]
#[command(name = "sidekick", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The whole command line: the subcommands and every setting's flag. Each
/// flag is optional (the settings file or the default fills it in) and
/// global (given before or after the subcommand's name).
pub(crate) fn command() -> clap::Command {
    // `Cli` last: its about and version replace those `Settings`' doc comment
    // would give the command (`Cli::command()` is `Cli::augment_args` too).
    let settings = Settings::augment_args(clap::Command::new("sidekick"));
    Cli::augment_args(settings).mut_args(|arg| arg.global(true).required(false))
}

/// Parses the process's arguments, printing help, version or a usage error
/// and exiting as clap does. The matches go to [`Settings::load`].
pub(crate) fn parse() -> (Cli, ArgMatches) {
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    (cli, matches)
}

/// What to run; without a subcommand sidekick renders (once, by polling or by
/// watching, as the flags say).
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Watch data files, templates and conf.d together; every save re-renders and
    /// prints a diff (file backend, watch on). With `-- CMD ARGS`, also runs CMD
    /// as `sidekick exec` does.
    Dev {
        #[command(flatten, next_help_heading = "Child process options")]
        exec: ExecArgs,
    },
    /// Render every resource, then run CMD as a supervised child (init shape):
    /// signals are forwarded, zombies reaped, the child reloaded or restarted on
    /// change, and sidekick exits with the child's exit code.
    Exec {
        #[command(flatten, next_help_heading = "Child process options")]
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
