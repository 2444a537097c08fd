use clap::Parser;

/// Writes images to remote disks over iSCSI.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let Cli {} = Cli::parse();
    anyhow::bail!("no command is implemented yet: `write`, `deploy` and friends are being built; see README.md")
}
