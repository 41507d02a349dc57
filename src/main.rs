//! The `portcullis` command: parse arguments, load configuration, set up logging, bind, run
//! until SIGTERM/SIGINT. The only user of anyhow.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use portcullis::config::{Config, LogFormat};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

mod allocator;

/// mimalloc instead of the system allocator: a proxied request makes a few dozen short-lived
/// allocations, and glibc's malloc spent about 6% of the CPU on them (docs/performance.md).
#[global_allocator]
static ALLOCATOR: allocator::MiMalloc = allocator::MiMalloc;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An authenticating reverse proxy: login, JWT cookies, route guards and token refresh in front of an unmodified site."
)]
struct Cli {
    /// The configuration file (TOML, or YAML for .yaml/.yml).
    #[arg(
        long,
        short,
        global = true,
        env = "PORTCULLIS_CONFIG",
        default_value = "portcullis.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default when no command is given).
    Run,
    /// Validate and lint the configuration: print every problem (exit 1) and warning, or `ok`.
    Check {
        /// Fail (exit 1) on warnings too.
        #[arg(long)]
        strict: bool,
    },
    /// Print what the proxy would do with one request: normalized path, rules tried, each
    /// token check, refresh, the action, and the headers injected and stripped.
    Explain {
        /// The Cookie header to send, e.g. 'access_token=eyJ...; theme=dark'.
        #[arg(long)]
        cookie: Option<String>,
        /// A request header 'Name: value' (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Explain an ingress's subrequest to forward_auth.listen: the original request is
        /// read from the headers (X-Forwarded-Uri/-Method/-Host/-Proto, X-Original-URI/-Method)
        /// or, without them, from METHOD and URL below forward_auth.path_prefix.
        #[arg(long)]
        forward_auth: bool,
        /// The request method, e.g. GET.
        method: String,
        /// The request target: a path (/dashboard?x=1) or a URL.
        url: String,
    },
    /// Serve one part of the demo alone (for examples/docker-compose.yml).
    #[command(hide = true)]
    DemoPart {
        /// `site` or `backend`.
        part: String,
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// Exit 0 if URL answers 2xx within 3 seconds (the container HEALTHCHECK; no curl needed).
    Health {
        #[arg(default_value = "http://127.0.0.1:9090/healthz")]
        url: String,
    },
    /// Run Portcullis in front of an embedded demo site and backend on loopback.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Print the demo's configuration file and exit.
        #[arg(long)]
        print_config: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check { strict } => check(&cli.config, strict),
        Command::DemoPart { part, listen } => match demo_part(&part, listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("portcullis: {err:#}");
                ExitCode::from(1)
            }
        },
        Command::Explain {
            cookie,
            headers,
            json,
            forward_auth,
            method,
            url,
        } => explain(
            &cli.config,
            portcullis::explain::Request {
                method: &method,
                url: &url,
                cookies: cookie.as_deref(),
                headers: &headers,
                forward_auth,
            },
            json,
        ),
        Command::Health { url } => match health(&url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("portcullis: unhealthy: {err:#}");
                ExitCode::from(1)
            }
        },
        Command::Demo {
            listen,
            print_config,
        } => match demo(listen, print_config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("portcullis: {err:#}");
                ExitCode::from(1)
            }
        },
        Command::Run => match serve(&cli.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("portcullis: {err:#}");
                ExitCode::from(1)
            }
        },
    }
}

fn check(path: &std::path::Path, strict: bool) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            // Certificates are parsed where TLS is built; build it here too, as a start would.
            let tls = portcullis::tls::problems(&config);
            if !tls.is_empty() {
                for (path, problem) in tls {
                    println!("{path}: {problem}");
                }
                return ExitCode::from(1);
            }
            let warnings = portcullis::lint::lint(&config);
            for warning in &warnings {
                println!("warning: {warning}");
            }
            if strict && !warnings.is_empty() {
                println!("{} warning(s); failing because of --strict", warnings.len());
                return ExitCode::from(1);
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for problem in &problems.0 {
                println!("{problem}");
            }
            ExitCode::from(1)
        }
    }
}

/// With `[cluster]`, the revocations every instance shares, read once from Redis, so that
/// `explain` can tell a revoked token; `None` without `[cluster]` or when Redis cannot be read.
fn shared_revocations(config: &Config) -> Option<portcullis::cluster::Cluster> {
    let settings = config.cluster.as_ref()?;
    let runtime = runtime().ok()?;
    runtime.block_on(async {
        let cluster = portcullis::cluster::Cluster::new(Some(settings)).ok()?;
        match cluster.load_revocations().await {
            Some(_) => Some(cluster),
            None => {
                eprintln!(
                    "portcullis: cannot read the revocations from Redis ({}); revocation is not checked",
                    settings.redis_redacted()
                );
                None
            }
        }
    })
}

fn explain(
    path: &std::path::Path,
    request: portcullis::explain::Request<'_>,
    json: bool,
) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!(
                "portcullis: {} is not a usable configuration:\n{problems}",
                path.display()
            );
            return ExitCode::from(1);
        }
    };
    let revocations = shared_revocations(&config);
    match portcullis::explain::explain_with(
        &config,
        &request,
        portcullis::auth::now(),
        revocations.as_ref().map(|c| c.revocations()),
    ) {
        Ok(explanation) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&explanation).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(explanation) => {
            print!("{}", portcullis::explain::render(&explanation));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("portcullis: {err}");
            ExitCode::from(2)
        }
    }
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(|problems| {
        let count = problems.0.len();
        let all = problems
            .0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        anyhow::anyhow!("{} has {count} problem(s): {all}", path.display())
    })?;
    init_tracing(&config);
    let runtime = runtime()?;
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        for address in &config.server.listen {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address}"))?;
            listeners.push(listener);
        }
        let bind = |address: std::net::SocketAddr, what: &'static str| async move {
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} ({what})"))
        };
        let admin = match &config.admin {
            Some(admin) => Some(bind(admin.listen, "admin").await?),
            None => None,
        };
        let redirect_http = match config.server.redirect_http {
            Some(address) => Some(bind(address, "server.redirect_http").await?),
            None => None,
        };
        let forward_auth = match &config.forward_auth {
            Some(forward_auth) => Some(bind(forward_auth.listen, "forward_auth.listen").await?),
            None => None,
        };
        let listeners = portcullis::Listeners {
            main: listeners,
            admin,
            redirect_http,
            forward_auth,
            config_path: Some(path.to_owned()),
        };
        portcullis::run_all(config, listeners, shutdown_signal())
            .await
            .context("serving")
    })
}

fn demo(listen: std::net::SocketAddr, print_config: bool) -> anyhow::Result<()> {
    let runtime = runtime()?;
    runtime.block_on(async move {
        let demo = portcullis::demo::Demo::start().await.context("starting the demo servers")?;
        let text = portcullis::demo::config_text(listen, demo.site, demo.backend, &demo.secret);
        if print_config {
            print!("{text}");
            return Ok(());
        }
        let config = Config::from_toml_str(&text).map_err(|problems| anyhow::anyhow!("demo config: {problems}"))?;
        init_tracing(&config);
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (choose another address with --listen 127.0.0.1:PORT)"))?;

        let users = portcullis::demo::USERS
            .iter()
            .map(|(email, password, _, role)| format!("    {email} / {password}   (role: {role})"))
            .collect::<Vec<_>>()
            .join("\n");
        println!(
            "Portcullis demo\n\n  open   http://{listen}/dashboard\n  users\n{users}\n\n  demo site    http://{}  (plain HTML, knows nothing of tokens)\n  demo backend http://{}  (issues HS256 tokens that live 60 s)\n\nThe configuration in use (portcullis demo --print-config prints it):\n\n{text}\nCtrl-C stops the demo.",
            demo.site, demo.backend
        );
        portcullis::run(config, listener, shutdown_signal()).await.context("serving")
    })
}

fn health(url: &str) -> anyhow::Result<()> {
    use http_body_util::Empty;
    let uri: http::Uri = url.parse().context("not a URL")?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Empty<bytes::Bytes>>();
        let response = tokio::time::timeout(std::time::Duration::from_secs(3), client.get(uri))
            .await
            .context("timed out")?
            .context("request failed")?;
        anyhow::ensure!(
            response.status().is_success(),
            "answered {}",
            response.status()
        );
        Ok(())
    })
}

fn demo_part(part: &str, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        println!("demo {part} listening on {listen}");
        match part {
            "site" => portcullis::demo::serve_site(listener).await,
            "backend" => {
                // The backend signs with the same secret Portcullis verifies with.
                let secret = std::env::var("PORTCULLIS_JWT__SECRET").context(
                    "set PORTCULLIS_JWT__SECRET: the demo backend signs its tokens with it",
                )?;
                portcullis::demo::serve_backend(listener, secret).await
            }
            other => anyhow::bail!("unknown demo part {other:?} (site or backend)"),
        }
        Ok(())
    })
}

/// The Tokio runtime: one worker per core, or `TOKIO_WORKER_THREADS` (Tokio's own variable).
/// With one worker the runtime is a current-thread one: the same single thread of work,
/// without the work-stealing scheduler's cross-thread wake-ups and parking (about a tenth of
/// the CPU per request at one worker; see docs/performance.md).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.trim().parse::<usize>().ok());
    let mut builder = if workers == Some(1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build().context("starting the runtime")
}

fn init_tracing(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down: draining in-flight requests");
}
