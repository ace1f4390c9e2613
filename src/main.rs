//! The `ringhost` binary: CLI parsing, logging set-up and exit codes. The
//! work happens in `daemon` (the node) and `admin` (the client side).

mod admin;
mod cli;
mod config;
mod daemon;
mod driver;
mod fail;
mod files;
mod logs;
mod mesh_server;
mod migrate;
mod migration_log;
mod push;
mod rpc;
mod runtimes;
mod serving;
mod site_cli;
mod sites;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, TlsCommand};
use fail::{EXIT_CERT, EXIT_CONFIG, Fail, FailCode};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail { code, err }) => {
            #[allow(clippy::print_stderr)] // the one place errors reach the user
            {
                eprintln!("ringhost: {err:#}");
            }
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Fail> {
    match cli.command {
        Command::Node(args) => daemon::run(*args),
        Command::CheckConfig { config } => daemon::check_config(&config),
        Command::Status { target, json } => admin::status(&target.data_dir, json),
        Command::Site(cmd) => site_cli::run(cmd),
        Command::Tls(TlsCommand::Init {
            dir,
            cluster,
            force,
        }) => {
            gossip::pki::init_ca(&dir, &cluster, force).code(EXIT_CERT)?;
            admin::say(&format!(
                "created the CA of cluster '{cluster}' in {}",
                dir.display()
            ));
            Ok(())
        }
        Command::Tls(TlsCommand::Issue { dir, node, force }) => {
            let name: model::NodeName = node.parse().code(EXIT_CONFIG)?;
            gossip::pki::issue_node(&dir, &name, force).code(EXIT_CERT)?;
            admin::say(&format!(
                "issued {0}.pem and {0}.key in {1}",
                name,
                dir.display()
            ));
            Ok(())
        }
    }
}
