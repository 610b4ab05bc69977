//! `handler`: the Orders API binary. `serve` (the default) runs the service; the other commands
//! help build and deploy it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use orders_api::app;
use orders_api::config::Config;
use orders_api::state::AppState;
use orders_api::{functions, routes, telemetry};

#[derive(Parser)]
#[command(
    name = "handler",
    version,
    about = "Orders API: Azure Functions custom handler"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Print the OpenAPI document, or write it to a file.
    Openapi {
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
        /// `3.1` (as served) or `3.0` (3.0.3, for import into API Management).
        #[arg(long, default_value = "3.1", value_parser = ["3.1", "3.0"])]
        spec_version: String,
    },
    /// Print a development-mode bearer token, valid for a handler with the same
    /// ORDERS_AUTH_DEV_SECRET (or the built-in development key).
    Token {
        /// The subject (`sub`): the owner of the orders the token reaches.
        #[arg(long)]
        sub: String,
        /// A scope for `scp`; repeat for more (e.g. --scope Orders.Read --scope Orders.Write).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// App roles for `roles`.
        #[arg(long, num_args = 1..)]
        roles: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        expires_in: u64,
    },
    /// Work with the Functions app files.
    Functions {
        #[command(subcommand)]
        command: FunctionsCommand,
    },
}

#[derive(Subcommand)]
enum FunctionsCommand {
    /// Compare every */function.json with the handler's routes and simulate the host's routing
    /// (function-name order, first match wins); exit 1 on any mismatch.
    Check {
        /// The Functions app root (where host.json is).
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
        Command::Openapi {
            output,
            spec_version,
        } => write_openapi(output, &spec_version),
        Command::Token {
            sub,
            scopes,
            roles,
            expires_in,
        } => print_token(sub, scopes, roles, expires_in),
        Command::Functions {
            command: FunctionsCommand::Check { root },
        } => check_functions(&root),
    }
}

fn serve() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("handler: {error}");
            return ExitCode::from(2);
        }
    };
    // Before the async runtime exists: the exporter's HTTP client must not start on it.
    let telemetry = telemetry::init(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("handler: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, telemetry)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("handler: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, telemetry: telemetry::Telemetry) -> Result<(), String> {
    let address = std::net::SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    if config.fault_injection {
        tracing::warn!(
            "fault injection is on: /api/faults/* can make this service fail on purpose"
        );
    }
    let grace = config.shutdown_grace;
    let serve_options = app::ServeOptions::from(&config);
    orders_api::auth::dev::announce(&config.auth);
    let state = AppState::from_config(config)?;
    // Keeps processing export jobs for as long as the server runs.
    let _worker = app::start_worker(&state);
    let router = app::router(state);
    tracing::info!(address = %local, "listening");
    let stop_requested = std::sync::Arc::new(std::sync::OnceLock::<std::time::Instant>::new());
    let shutdown = {
        let stop_requested = stop_requested.clone();
        async move {
            shutdown_signal().await;
            let _ = stop_requested.set(std::time::Instant::now());
        }
    };
    let served = app::serve(listener, router, shutdown, serve_options)
        .await
        .map_err(|e| format!("server error: {e}"));
    if served.is_ok() {
        tracing::info!("stopped");
    }
    // Pending telemetry gets what is left of the grace period, and at least a second so a
    // zero grace still lets the last batch go out.
    let left = match stop_requested.get() {
        Some(at) => grace.saturating_sub(at.elapsed()),
        None => grace,
    };
    telemetry
        .flush(left.max(std::time::Duration::from_secs(1)))
        .await;
    served
}

/// Resolves on SIGTERM (the Functions host and container platforms) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

fn print_token(sub: String, scopes: Vec<String>, roles: Vec<String>, expires_in: u64) -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("handler: {error}");
            return ExitCode::from(2);
        }
    };
    let request = orders_api::auth::dev::TokenRequest {
        subject: sub,
        scopes,
        roles,
        expires_in: std::time::Duration::from_secs(expires_in),
    };
    match orders_api::auth::dev::issue_token(&config.auth, &request) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("handler: {error}");
            ExitCode::FAILURE
        }
    }
}

fn write_openapi(output: Option<PathBuf>, spec_version: &str) -> ExitCode {
    let version = match spec_version {
        "3.0" => routes::openapi::SpecVersion::V3_0,
        _ => routes::openapi::SpecVersion::V3_1,
    };
    let text = match routes::openapi::render(&routes::document(), version) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("handler: {error}");
            return ExitCode::FAILURE;
        }
    };
    match output {
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Some(path) => match std::fs::write(&path, text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("handler: cannot write {}: {error}", path.display());
                ExitCode::FAILURE
            }
        },
    }
}

fn check_functions(root: &std::path::Path) -> ExitCode {
    let (loaded, mut problems) = functions::check::load(root);
    problems.extend(functions::check::check(&loaded, &routes::catalog()));
    if problems.is_empty() {
        let (table, _) = functions::routing::RouteTable::new(&loaded);
        let order: Vec<&str> = table.routes().iter().map(|r| r.function).collect();
        println!(
            "functions check: {} function folders agree with the handler's routes; the host tries HTTP functions in this order: {}",
            loaded.len(),
            order.join(", ")
        );
        ExitCode::SUCCESS
    } else {
        for problem in &problems {
            println!("mismatch: {problem}");
        }
        println!("functions check: {} mismatch(es)", problems.len());
        ExitCode::FAILURE
    }
}
