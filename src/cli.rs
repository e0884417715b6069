//! Command-line interface: the subcommands, plus a flag for every setting
//! (`Settings` in `config.rs`), each of which also reads a `SIDEKICK_*`
//! environment variable and is accepted after a subcommand's name too.

use clap::{ArgMatches, Args, FromArgMatches as _, Parser, Subcommand, ValueEnum};

use crate::config::Settings;

/// What `--version` prints after the name: the version and the git commit.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SIDEKICK_GIT_COMMIT"),
    ")"
);

/// sidekick keeps an application's config files in step with its
/// service-discovery backend.
#[derive(Debug, Parser)]
#[command(name = "sidekick", version = VERSION, about, long_about = None)]
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
    let cmd = command();
    let args = confd_style_flags(&cmd, std::env::args_os());
    let matches = cmd.get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    (cli, matches)
}

/// Go's flag syntax, as confd's command lines use it: a long flag with one
/// dash (`-onetime`, `-confdir=/etc/confd`, `-node http://...`) becomes the
/// same flag with two, when sidekick has a flag of that name. Nothing after a
/// `--` (a child's command) is touched, nor anything else.
pub(crate) fn confd_style_flags<I>(cmd: &clap::Command, args: I) -> Vec<std::ffi::OsString>
where
    I: IntoIterator<Item = std::ffi::OsString>,
{
    let mut longs: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
    for sub in cmd.get_subcommands() {
        longs.extend(sub.get_arguments().filter_map(|a| a.get_long()));
    }
    let mut after_separator = false;
    args.into_iter()
        .map(|arg| {
            if after_separator {
                return arg;
            }
            let Some(text) = arg.to_str() else {
                return arg;
            };
            if text == "--" {
                after_separator = true;
                return arg;
            }
            match text.strip_prefix('-') {
                Some(rest) if !rest.starts_with('-') && rest.len() > 1 => {
                    let name = rest.split_once('=').map_or(rest, |(n, _)| n);
                    if longs.contains(&name) {
                        tracing::debug!(flag = text, "confd-style flag read as --{rest}");
                        return format!("--{rest}").into();
                    }
                    arg
                }
                _ => arg,
            }
        })
        .collect()
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
    /// Write a copy of the confdir with its Go (confd) templates converted to
    /// Tera; what has no Tera form is left as a comment naming its line.
    Convert {
        /// Where the converted confdir goes [default: CONFDIR.tera]
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
    /// Check every resource and its templates; writes nothing, runs nothing.
    ///
    /// Parses each conf.d resource and the templates it reads (either engine)
    /// and, with --data, renders each to memory (limits and output_format
    /// included). Prints one line per resource, errors with file and line, and
    /// a summary; exits non-zero if any failed. Asks no backend.
    Check {
        /// Data file to render with (YAML, JSON or TOML, or a directory of them;
        /// read as `--backend file --file F` reads it); repeatable
        #[arg(long, value_name = "F")]
        data: Vec<std::path::PathBuf>,
        /// Load the resources as `sidekick exec` does (a `reload_signal` with no
        /// `pid_file` or `process` then signals the child)
        #[arg(long)]
        exec: bool,
    },
    /// Print one resource's render to stdout; writes no file, runs nothing.
    ///
    /// The data is --data's, or one load from the backend the flags name (as
    /// --onetime loads). Stdout gets exactly the bytes a run would write; an
    /// error goes to stderr, with file and line, and the exit is non-zero.
    Render {
        /// The resource: its file under conf.d (with or without .toml) or its path
        #[arg(value_name = "RESOURCE")]
        resource: String,
        /// Data file to render with (YAML, JSON or TOML, or a directory of them)
        /// instead of the backend; repeatable
        #[arg(long, value_name = "F")]
        data: Vec<std::path::PathBuf>,
    },
    /// Print a completion script for SHELL to stdout (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout: sidekick(1), or with SUBCOMMAND
    /// sidekick-SUBCOMMAND(1). `sidekick man | man -l -` reads it.
    Man {
        /// The subcommand whose page to print
        #[arg(value_name = "SUBCOMMAND")]
        subcommand: Option<String>,
    },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        confd_style_flags(&command(), args.iter().map(|a| (*a).into()))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_long_flags_are_accepted_as_confd_writes_them() {
        assert_eq!(
            rewrite(&[
                "sidekick",
                "-onetime",
                "-confdir=/c",
                "-backend",
                "env",
                "-h"
            ]),
            [
                "sidekick",
                "--onetime",
                "--confdir=/c",
                "--backend",
                "env",
                "-h"
            ]
        );
        assert_eq!(
            rewrite(&[
                "sidekick",
                "exec",
                "-kill-timeout",
                "1s",
                "--",
                "sh",
                "-onetime"
            ]),
            [
                "sidekick",
                "exec",
                "--kill-timeout",
                "1s",
                "--",
                "sh",
                "-onetime"
            ]
        );
        assert_eq!(rewrite(&["sidekick", "-nosuch"]), ["sidekick", "-nosuch"]);
        let m = command()
            .try_get_matches_from(rewrite(&["sidekick", "-onetime", "-template-engine", "go"]))
            .unwrap();
        assert_eq!(m.get_one::<bool>("onetime"), Some(&true));
    }
}
