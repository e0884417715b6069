//! sidekick: keeps an application's config files in step with its
//! service-discovery backend. The binary (`src/main.rs`) only calls [`main`];
//! the work lives in the modules below and in the backend crates under
//! `backends/`. [`render`] is public so benchmarks can time it alone.

mod backend;
mod check;
mod cli;
mod command;
mod config;
mod convert;
mod debounce;
mod dev;
mod diff;
mod dns;
mod endpoints;
mod engine;
mod event_loop;
mod executor;
mod hook;
mod manual;
mod metrics;
mod pipeline;
mod reap;
mod redact;
mod reload;
pub mod render;
mod report;
mod resource;
mod shutdown;
mod source;
mod status;
mod supervise;
mod systemd;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{Cli, Command, ExecArgs, LogFormat};
use crate::config::Settings;
use crate::event_loop::{ExecSpec, Mode};

/// Parses the command line, runs, and returns the process exit code.
pub fn main() -> ExitCode {
    let (cli, matches) = cli::parse();
    match real_main(cli, &matches) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sidekick: error: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

fn real_main(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<u8> {
    // These describe the command line alone: no settings file is read.
    let command = match cli.command {
        Some(Command::Completions { shell }) => return manual::completions(shell),
        Some(Command::Man { subcommand }) => return manual::man(subcommand.as_deref()),
        command => command,
    };
    let mut settings = Settings::load(matches)?;
    let (mode, exec) = match command {
        None => (Mode::Normal, None),
        Some(Command::Dev { exec }) => {
            settings.watch = true;
            settings.onetime = false;
            (Mode::Dev, exec_spec(exec, false)?)
        }
        Some(Command::Exec { exec }) => (Mode::Normal, exec_spec(exec, true)?),
        #[cfg(feature = "rancher")]
        Some(Command::MetadataServer) => {
            init_logging(&settings)?;
            let config = sidekick_metadata_server::ServerConfig::from_settings(
                settings.backends.rancher.listen.as_deref(),
                &settings.backends.file.files,
                settings.backends.rancher.self_container.clone(),
            )?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            return runtime.block_on(async {
                let mut shutdown = shutdown::Shutdown::new()?;
                sidekick_metadata_server::serve(config, async move { shutdown.recv().await })
                    .await?;
                Ok::<u8, anyhow::Error>(0)
            });
        }
        Some(Command::Convert { out }) => {
            let out = out.unwrap_or_else(|| {
                let mut name = settings.confdir.clone().into_os_string();
                name.push(".tera");
                name.into()
            });
            return convert::run(&settings.confdir, &out);
        }
        Some(Command::Check { data, exec }) => {
            init_logging(&settings)?;
            return check::check(settings, &data, exec);
        }
        Some(Command::Render { resource, data }) => {
            init_logging(&settings)?;
            return check::render(settings, &resource, &data);
        }
        Some(Command::Completions { .. } | Command::Man { .. }) => {
            unreachable!("answered above, before the settings are read")
        }
        #[cfg(not(feature = "rancher"))]
        Some(Command::MetadataServer) => {
            anyhow::bail!("metadata-server was left out of this build (cargo feature rancher)")
        }
    };
    init_logging(&settings)?;
    // An error here fails the run only if a resource reads the global backend.
    let backend = backend::build(&settings);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let code = runtime.block_on(event_loop::run(settings, backend, mode, exec))?;
    // Exit codes are 0..=255; 128 + signal fits.
    Ok(u8::try_from(code).unwrap_or(1))
}

/// The child to supervise, if a command was given (`required` for `exec`).
fn exec_spec(args: ExecArgs, required: bool) -> anyhow::Result<Option<ExecSpec>> {
    if args.command.is_empty() {
        if required {
            anyhow::bail!("exec needs a command: sidekick exec [flags] -- CMD ARGS...");
        }
        return Ok(None);
    }
    let kill_timeout = match &args.kill_timeout {
        Some(t) => {
            debounce::parse_duration(t).map_err(|m| anyhow::anyhow!("--kill-timeout: {m}"))?
        }
        None => std::time::Duration::from_secs(10),
    };
    Ok(Some(ExecSpec {
        argv: args.command,
        group: args.exec_group,
        kill_timeout,
    }))
}

fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
    use tracing_subscriber::util::SubscriberInitExt as _;

    // kube-runtime logs every watch retry itself; sidekick logs state changes.
    let directives = if settings.log_level.contains('=') {
        settings.log_level.clone()
    } else {
        format!("{},kube_runtime=error", settings.log_level)
    };
    // `Targets` ("level" or "target=level,..."), not `EnvFilter`: no regex
    // engine in the binary or in memory for a log filter.
    let filter: tracing_subscriber::filter::Targets = directives
        .parse()
        .with_context(|| format!("bad --log-level {:?}", settings.log_level))?;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry = tracing_subscriber::registry();
    let result = match settings.log_format {
        LogFormat::Json => registry.with(layer.json().with_filter(filter)).try_init(),
        LogFormat::Text => registry
            .with(
                layer
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter),
            )
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// The error and its causes on one line, skipping a cause whose text the
/// message already carries (many errors print their source themselves).
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Whether to colour what goes to stdout: a terminal, and `NO_COLOR` unset.
pub(crate) fn color_stdout() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}
