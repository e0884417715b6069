//! sidekick: keeps an application's config files in step with its
//! service-discovery backend. This binary is the wiring: CLI, settings,
//! logging and the run loop; the work lives in the modules below and in the
//! backend crates under `backends/`.

mod backend;
mod cli;
mod command;
mod config;
mod dev;
mod diff;
mod dns;
mod pipeline;
mod render;
mod resource;
mod run;
mod shutdown;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::cli::{Cli, Command, LogFormat};
use crate::config::Settings;
use crate::run::Mode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sidekick: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<u8> {
    let mut settings = Settings::load(&cli.flags)?;
    let mode = match cli.command {
        None => Mode::Normal,
        Some(Command::Dev) => {
            settings.watch = true;
            settings.onetime = false;
            Mode::Dev
        }
        Some(Command::MetadataServer) => {
            anyhow::bail!("metadata-server is not built yet");
        }
    };
    init_logging(&settings)?;
    let backend = backend::build(&settings)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let code = runtime.block_on(run::run(settings, backend, mode))?;
    Ok(u8::try_from(code).unwrap_or(1))
}

fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log_level)
        .with_context(|| format!("bad --log-level {:?}", settings.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match settings.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Whether to colour what goes to stdout: a terminal, and `NO_COLOR` unset.
pub(crate) fn color_stdout() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}
