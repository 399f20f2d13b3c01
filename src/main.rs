//! The `dcos-token-proxy` binary: parse flags, load settings, start logging, find the
//! credentials (a login or token file in sidecar mode, else the DC/OS config, followed),
//! serve until SIGINT/SIGTERM or `/quitquitquit`. Errors print as one line, never a
//! panic or a backtrace; the exit code is 0 after a clean shutdown, 1 on any error, 2 on
//! bad usage (clap). `dcos-token-proxy health` probes a running proxy instead.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use dcos_token_proxy::admin::health;
use dcos_token_proxy::cli::{Cli, Command};
use dcos_token_proxy::dcos::config;
use dcos_token_proxy::env::Env;
use dcos_token_proxy::settings::{FileSettings, Settings};
use dcos_token_proxy::source::credential::Credential;
use dcos_token_proxy::source::watch::Follow;
use dcos_token_proxy::{Proxy, logging, server};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Health { url, wait }) = &cli.command {
        return run_health(url, *wait);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dcos-token-proxy: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `health`: exit 0 when the proxy at `url` is ready (within `wait`), else 1.
fn run_health(url: &str, wait: Option<std::time::Duration>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dcos-token-proxy: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(health::check(url, wait)) {
        Ok(answer) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dcos-token-proxy: not ready: {e}");
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
    logging::init(settings.log_format, &settings.log_filter)?;
    // Nothing set up yet is not fatal: the proxy waits for `dcos cluster setup`. Any other
    // problem is a mistake to fix now.
    let cluster = match config::discover(&settings.discover, &env) {
        Ok(cluster) => Ok(cluster),
        Err(e) if e.is_not_set_up() => Err(e),
        Err(e) => return Err(e.into()),
    };
    // Sidecar mode: a login or a token file instead of the DC/OS CLI's token. The
    // master still comes from DCOS_URL / --upstream (or the CLI config).
    let credential = Credential::resolve(&settings.credentials, &env)?;
    if credential.is_some()
        && let Err(e) = &cluster
    {
        anyhow::bail!(
            "{e}; with a service account, password or token file the master URL comes              from DCOS_URL or --upstream: set one of them to https://<master>"
        );
    }
    let follow = Follow::new(&settings, env);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Handlers go in before anyone is told we are listening, so an early SIGTERM
        // drains instead of killing.
        let shutdown = server::shutdown_signal().context("cannot install signal handlers")?;
        let proxy = match (&cluster, credential) {
            (Ok(cluster), Some(credential)) => {
                Proxy::bind_credential(&settings, cluster, credential).await?
            }
            (Ok(cluster), None) => Proxy::bind(&settings, cluster).await?.follow(follow),
            (Err(why), _) => Proxy::bind_waiting(&settings, why).await?.follow(follow),
        };
        // The one place the path secret, if any, is shown.
        println!("dcos-token-proxy listening on {}", proxy.base_url());
        proxy.serve(shutdown).await;
        Ok(())
    })
}
