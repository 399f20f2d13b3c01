//! `dcos-token-proxy exec -- CMD…`: run one command with a private proxy, as
//! `aws-vault exec` does.
//!
//! The proxy starts on a free loopback port (unless `--listen` says otherwise), with the
//! same settings and DC/OS config as `dcos-token-proxy` alone, and follows logins while
//! CMD runs. CMD inherits the terminal and the environment plus `DCOS_URL` and
//! `DCOS_TOKEN_PROXY_URL`, both the proxy's base URL, so `dcos marathon app list` and any
//! tool that reads `DCOS_URL` go through it with no setting changed. SIGINT, SIGTERM,
//! SIGHUP and SIGQUIT received meanwhile are passed on to CMD (a Ctrl-C at a terminal
//! reaches CMD directly as well, as with `aws-vault exec`). When CMD exits, the proxy
//! goes with this process, and the exit status is CMD's (`128 + N` if signal N ended it).
//! The proxy logs only warnings unless `-v` is given, so CMD's output stays readable.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, ExitCode, ExitStatus};

use anyhow::Context;

use dcos_token_proxy::Proxy;
use dcos_token_proxy::dcos::config;
use dcos_token_proxy::env::Env;
use dcos_token_proxy::logging;
use dcos_token_proxy::settings::Settings;
use dcos_token_proxy::source::watch::Follow;
use dcos_token_proxy::types::ListenAddr;

/// The variable the DC/OS CLI and most tools read for the master URL.
pub const CHILD_DCOS_URL: &str = "DCOS_URL";
/// The same URL under the proxy's own name, for scripts that want to know.
pub const CHILD_PROXY_URL: &str = "DCOS_TOKEN_PROXY_URL";
/// The log filter while CMD runs, unless `-v` or `-q` is given.
pub const EXEC_LOG_FILTER: &str = "warn";

/// Run `command` behind a private proxy; returns CMD's exit status.
pub fn run(
    mut settings: Settings,
    listen_given: bool,
    quiet_default: bool,
    env: Env,
    command: &[OsString],
) -> anyhow::Result<ExitCode> {
    let (program, args) = command
        .split_first()
        .context("exec needs a command: dcos-token-proxy exec -- CMD [ARGS…]")?;
    if !listen_given {
        settings.listen = ListenAddr::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    }
    if quiet_default {
        settings.log_filter = EXEC_LOG_FILTER.to_owned();
    }
    // Held to the end: buffered log lines are written out before exit.
    let _log = logging::init(settings.log_format, &settings.log_filter)?;
    let cluster = match config::discover(&settings.discover, &env) {
        Ok(cluster) => Ok(cluster),
        Err(e) if e.is_not_set_up() => Err(e),
        Err(e) => return Err(e.into()),
    };
    let follow = Follow::new(&settings, env);
    // Its workers serve connections too: the same turns as the serving threads'.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let runtime = dcos_token_proxy::server::turn::hooks(builder.enable_all())
        .build()
        .context("cannot start the async runtime")?;
    let status = runtime.block_on(async {
        let signals = forwarded_signals().context("cannot install signal handlers")?;
        let proxy = match &cluster {
            Ok(cluster) => Proxy::bind(&settings, cluster).await?,
            Err(why) => Proxy::bind_waiting(&settings, why).await?,
        }
        .follow(follow);
        let base = proxy.base_url();
        let base = base.trim_end_matches('/').to_owned();
        let mut child = Command::new(program)
            .args(args)
            .env(CHILD_DCOS_URL, &base)
            .env(CHILD_PROXY_URL, &base)
            .spawn()
            .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
        let pid = child.id();
        let waited = tokio::task::spawn_blocking(move || child.wait());
        let serving = tokio::spawn(proxy.serve(std::future::pending()));
        let status = forward_until_exit(signals, pid, waited).await?;
        serving.abort();
        anyhow::Ok(status)
    })?;
    runtime.shutdown_background();
    Ok(exit_code(status))
}

/// CMD's status as ours: its code, or `128 + N` when signal N ended it.
fn exit_code(status: ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return ExitCode::from(u8::try_from(128 + sig).unwrap_or(1));
        }
    }
    ExitCode::FAILURE
}

#[cfg(unix)]
type Signals = Vec<(tokio::signal::unix::Signal, libc::c_int)>;
#[cfg(not(unix))]
type Signals = ();

#[cfg(unix)]
fn forwarded_signals() -> std::io::Result<Signals> {
    use tokio::signal::unix::{SignalKind, signal};
    [
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
        (SignalKind::quit(), libc::SIGQUIT),
    ]
    .into_iter()
    .map(|(kind, number)| Ok((signal(kind)?, number)))
    .collect()
}

#[cfg(not(unix))]
fn forwarded_signals() -> std::io::Result<Signals> {
    Ok(())
}

/// Pass signals on to the child until it exits.
async fn forward_until_exit(
    #[allow(unused_mut)] mut signals: Signals,
    #[allow(unused_variables)] pid: u32,
    waited: tokio::task::JoinHandle<std::io::Result<ExitStatus>>,
) -> anyhow::Result<ExitStatus> {
    let mut waited = std::pin::pin!(waited);
    loop {
        #[cfg(unix)]
        {
            let next = futures_next(&mut signals);
            tokio::select! {
                status = &mut waited => return Ok(status.context("waiting for the command")??),
                number = next => {
                    let Ok(pid) = libc::pid_t::try_from(pid) else { continue };
                    // SAFETY: kill(2) with a pid we spawned and still wait for (it cannot
                    // have been reaped, so the pid is not reused) and a valid signal number.
                    unsafe { libc::kill(pid, number) };
                }
            }
        }
        #[cfg(not(unix))]
        {
            return Ok((&mut waited).await.context("waiting for the command")??);
        }
    }
}

/// The next of several signals to arrive, by number.
#[cfg(unix)]
async fn futures_next(signals: &mut Signals) -> libc::c_int {
    std::future::poll_fn(|cx| {
        for (signal, number) in signals.iter_mut() {
            if signal.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready(*number);
            }
        }
        std::task::Poll::Pending
    })
    .await
}
