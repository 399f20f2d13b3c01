//! The `dcos-token-proxy` binary: parse flags, load settings, start logging, find the
//! DC/OS config and follow it, serve until SIGINT/SIGTERM. Errors print as one line,
//! never a panic or a backtrace; the exit code is 0 after a clean shutdown, 1 on any
//! error, 2 on bad usage (clap), 130/143 when a second Ctrl-C/SIGTERM cut the drain
//! short. With a service account, a password or a token file (sidecar mode) the token
//! comes from a login or that file instead of the DC/OS CLI's config, and
//! `/quitquitquit` on the admin listener ends serving like SIGTERM. Subcommands
//! (`config example`, `completions`, `man`, `doctor`, `exec`, `health`) are in
//! `commands` and below.

mod commands;
mod ready;
mod signals;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use dcos_token_proxy::admin::health;
use dcos_token_proxy::cli::{Cli, Command};
use dcos_token_proxy::dcos::config;
use dcos_token_proxy::env::Env;
use dcos_token_proxy::settings::{FileSettings, Settings};
use dcos_token_proxy::source::credential::Credential;
use dcos_token_proxy::source::watch::Follow;
use dcos_token_proxy::types::LogFormat;
use dcos_token_proxy::{Proxy, fdlimit, logging, server};

use crate::signals::Signals;

fn main() -> ExitCode {
    let cli = dcos_token_proxy::cli::parse();
    let result = match &cli.command {
        None => run(cli),
        Some(command) => subcommand(&cli, command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dcos-token-proxy: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Everything but serving.
fn subcommand(cli: &Cli, command: &Command) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Doctor { json } => return doctor(cli, *json),
        Command::Clusters { json } => return clusters(cli, *json),
        Command::Exec { command } => {
            let env = Env::from_process();
            let file = match &cli.config {
                Some(path) => FileSettings::load(path)?,
                None => FileSettings::default(),
            };
            let settings = Settings::resolve(cli, &file, &env)?;
            let quiet_default = cli.verbose == 0 && cli.quiet == 0;
            return commands::exec::run(
                settings,
                cli.listen.is_some(),
                quiet_default,
                env,
                command,
            );
        }
        Command::Config(c) => commands::config(c, &mut out)?,
        Command::Completions { shell } => commands::completions(*shell, &mut out),
        Command::Man => commands::man(&mut out)?,
        Command::Health { url, wait } => return Ok(run_health(url, *wait)),
    }
    Ok(ExitCode::SUCCESS)
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

/// `dcos-token-proxy clusters`: the same settings as serving, the files only.
fn clusters(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    let env = Env::from_process();
    let file = match &cli.config {
        Some(path) => FileSettings::load(path)?,
        None => FileSettings::default(),
    };
    let settings = Settings::resolve(cli, &file, &env)?;
    let listing = commands::clusters::list(&settings, &env)?;
    if json {
        println!("{}", serde_json::to_string(&listing)?);
    } else {
        print!("{}", commands::clusters::render(&listing));
    }
    Ok(ExitCode::SUCCESS)
}

/// `dcos-token-proxy doctor`: the same settings as serving, no logging, a checklist.
fn doctor(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    let env = Env::from_process();
    let file = match &cli.config {
        Some(path) => FileSettings::load(path)?,
        None => FileSettings::default(),
    };
    let settings = Settings::resolve(cli, &file, &env)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(commands::doctor::run(&settings, &env));
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", commands::doctor::render(&report));
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let env = Env::from_process();
    let file = match &cli.config {
        Some(path) => FileSettings::load(path)?,
        None => FileSettings::default(),
    };
    let mut settings = Settings::resolve(&cli, &file, &env)?;
    // Held to the end of `run`: queued log lines are written out before any error.
    let _log = logging::init(settings.log_format, &settings.log_filter)?;
    fit_open_files(&mut settings);
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
            "{e}; with a service account, password or token file the master URL comes \
             from DCOS_URL or --upstream: set one of them to https://<master>"
        );
    }
    let follow = Follow::new(&settings, env);

    // Thread per core: this thread's runtime serves as worker 0 and runs the background
    // tasks (signals, watcher, logins, admin); `server::serve` starts the other workers,
    // each with its own runtime (and its own idle master connections).
    let runtime = server::turn::runtime()
        .build()
        .context("cannot start the async runtime")?;
    let forced = runtime.block_on(async {
        // Handlers go in before anyone is told we are listening, so an early SIGTERM
        // drains instead of killing.
        let Signals { shutdown, force } =
            Signals::install(settings.shutdown_grace).context("cannot install signal handlers")?;
        let proxy = match (&cluster, credential) {
            (Ok(cluster), Some(credential)) => {
                Proxy::bind_credential(&settings, cluster, credential).await?
            }
            (Ok(cluster), None) => Proxy::bind(&settings, cluster).await?.follow(follow),
            (Err(why), _) => Proxy::bind_waiting(&settings, why).await?.follow(follow),
        };
        // The one place the path secret, if any, is shown.
        println!("dcos-token-proxy listening on {}", proxy.base_url());
        let first = proxy.source().load();
        let facts = ready::Facts::of(proxy.base_url(), &first);
        if settings.log_format == LogFormat::Json {
            ready::log_ready(&facts);
        } else if std::io::stdout().is_terminal() {
            print!("{}", ready::banner(&facts));
        }
        // In the background: serving starts now, whatever the master does.
        tokio::spawn(ready::check(first, settings.response_timeout));
        let shutdown = async {
            let _ = shutdown.await;
        };
        tokio::select! {
            () = proxy.serve(shutdown) => anyhow::Ok(None),
            Ok(status) = force => Ok(Some(status)),
        }
    })?;
    match forced {
        // Open connections may still hold tasks; don't wait for them.
        Some(status) => {
            runtime.shutdown_background();
            Ok(ExitCode::from(status))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Raise the open-files limit as far as allowed, and lower the connection and tunnel
/// limits if they would not fit below it (see `fdlimit`).
fn fit_open_files(settings: &mut Settings) {
    #[cfg(unix)]
    let open_files = match fdlimit::raise_open_files_limit() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit (RLIMIT_NOFILE)");
            return;
        }
    };
    #[cfg(not(unix))]
    return;
    let fitted = fdlimit::fit(open_files, settings.max_connections, settings.max_tunnels);
    if fitted.max_connections != settings.max_connections
        || fitted.max_tunnels != settings.max_tunnels
    {
        tracing::warn!(
            open_files,
            max_connections = fitted.max_connections,
            max_tunnels = fitted.max_tunnels,
            "the open-files limit (ulimit -n) is too low for max_connections = {} and \
             max_tunnels = {}; lowered so that connections to clients and to the master fit \
             (raise the hard limit, e.g. LimitNOFILE= in a systemd unit, to use more)",
            settings.max_connections,
            settings.max_tunnels
        );
        settings.max_connections = fitted.max_connections;
        settings.max_tunnels = fitted.max_tunnels;
    }
}
