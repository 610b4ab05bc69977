//! `handler`: the Orders API binary. `serve` (the default) runs the service; the other commands
//! help build and deploy it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orders_api::app::{self, AppState};
use orders_api::config::Config;
use orders_api::{functions, openapi, routes, telemetry};

#[derive(Parser)]
#[command(name = "handler", version, about = "Orders API: Azure Functions custom handler")]
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
    },
    /// Work with the Functions app files.
    Functions {
        #[command(subcommand)]
        command: FunctionsCommand,
    },
}

#[derive(Subcommand)]
enum FunctionsCommand {
    /// Compare every */function.json with the handler's routes; exit 1 on any mismatch.
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
        Command::Openapi { output } => write_openapi(output),
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
    telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("handler: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("handler: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    let address = std::net::SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    if config.fault_injection {
        tracing::warn!("fault injection is on: /api/faults/* can make this service fail on purpose");
    }
    let grace = config.shutdown_grace;
    let router = app::router(AppState::in_memory(config));
    tracing::info!(address = %local, "listening");
    app::serve(listener, router, shutdown_signal(), grace)
        .await
        .map_err(|e| format!("server error: {e}"))?;
    tracing::info!("stopped");
    Ok(())
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

fn write_openapi(output: Option<PathBuf>) -> ExitCode {
    let text = openapi::document_json();
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
        println!("functions check: {} function folders agree with the handler's routes", loaded.len());
        ExitCode::SUCCESS
    } else {
        for problem in &problems {
            println!("mismatch: {problem}");
        }
        println!("functions check: {} mismatch(es)", problems.len());
        ExitCode::FAILURE
    }
}
