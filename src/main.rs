//! The `dcos-token-proxy` binary: parse flags, load settings, start logging, find the
//! DC/OS config and follow it, serve until SIGINT/SIGTERM. Errors print as one line,
//! never a panic or a backtrace; the exit code is 0 after a clean shutdown, 1 on any
//! error, 2 on bad usage (clap).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use dcos_token_proxy::cli::Cli;
use dcos_token_proxy::dcos::config;
use dcos_token_proxy::env::Env;
use dcos_token_proxy::settings::{FileSettings, Settings};
use dcos_token_proxy::source::watch::Follow;
use dcos_token_proxy::{Proxy, logging, server};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dcos-token-proxy: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let env = Env::from_process();
    let file = match &cli.config {
        Some(path) => FileSettings::load(path)?,
        None => FileSettings::default(),
    };
    let settings = Settings::resolve(&cli, &file, &env)?;
    // Held to the end of `run`: queued log lines are written out before any error.
    let _log = logging::init(settings.log_format, &settings.log_filter)?;
    // Nothing set up yet is not fatal: the proxy waits for `dcos cluster setup`. Any other
    // problem is a mistake to fix now.
    let cluster = match config::discover(&settings.discover, &env) {
        Ok(cluster) => Ok(cluster),
        Err(e) if e.is_not_set_up() => Err(e),
        Err(e) => return Err(e.into()),
    };
    let follow = Follow::new(&settings, env);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Handlers go in before anyone is told we are listening, so an early SIGTERM
        // drains instead of killing.
        let shutdown = server::shutdown_signal().context("cannot install signal handlers")?;
        let proxy = match &cluster {
            Ok(cluster) => Proxy::bind(&settings, cluster).await?,
            Err(why) => Proxy::bind_waiting(&settings, why).await?,
        }
        .follow(follow);
        // The one place the path secret, if any, is shown.
        println!("dcos-token-proxy listening on {}", proxy.base_url());
        proxy.serve(shutdown).await;
        Ok(())
    })
}
