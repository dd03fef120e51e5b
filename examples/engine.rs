//! Stand-alone front end to the engine commands until they are wired into
//! `bets` itself: `cargo run --example engine -- data show`,
//! `... -- engine pretrain --profile small`, `... -- bench --profiles tiny,small`.
//! The cache is `$BETS_HOME` or `./.bets`.

use std::path::PathBuf;

use bets::cli_engine::{BenchArgs, DataCmd, EngineCmd};
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    #[command(subcommand)]
    Data(DataCmd),
    #[command(subcommand)]
    Engine(EngineCmd),
    Bench(BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cache = std::env::var_os("BETS_HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".bets"));
    match &cli.cmd {
        Cmd::Data(c) => bets::app::engine_cmds::data(c, &cache),
        Cmd::Engine(c) => bets::app::engine_cmds::engine(c, &cache),
        Cmd::Bench(a) => bets::app::engine_cmds::bench(a, std::path::Path::new(".")),
    }
}
