//! What describes the command line outside `--help`: shell completion scripts
//! (`sidekick completions SHELL`, clap_complete) and man pages (`sidekick man
//! [SUBCOMMAND]`, clap_mangen). Both are generated, at run time, from the same
//! clap definition as `--help` ([`cli::command`]), so they list exactly the
//! flags of this binary (its cargo features included) and cannot go stale. A
//! build script could not produce them: the definition is this crate's code.

use std::io::Write as _;

use anyhow::Context as _;

use crate::cli;

/// Prints the completion script for `shell` to stdout.
pub(crate) fn completions(shell: clap_complete::Shell) -> anyhow::Result<u8> {
    let mut cmd = cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "sidekick", &mut script);
    print(&script)
}

/// Prints sidekick(1), or sidekick-SUBCOMMAND(1), as roff to stdout. A
/// subcommand's page lists every flag it takes: its own and the global ones.
pub(crate) fn man(subcommand: Option<&str>) -> anyhow::Result<u8> {
    let mut cmd = cli::command().disable_help_subcommand(true);
    // Built, so that subcommands carry the global flags and a display name
    // (`sidekick-check`) for their page's title.
    cmd.build();
    let source = format!("sidekick {}", cmd.get_version().unwrap_or_default());
    let page = match subcommand {
        None => cmd,
        Some(name) => match cmd.find_subcommand(name) {
            Some(sub) => sub.clone(),
            None => {
                let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
                anyhow::bail!(
                    "no subcommand {name:?}; the subcommands are: {}",
                    names.join(", ")
                )
            }
        },
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .source(source)
        .render(&mut roff)
        .context("cannot render the man page")?;
    print(&roff)
}

fn print(bytes: &[u8]) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    Ok(0)
}
