use clap::Parser;

/// The deploy ramdisk's iSCSI target agent.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let Cli {} = Cli::parse();
    anyhow::bail!("no command is implemented yet: `serve` and `deploy` are being built; see README.md")
}
