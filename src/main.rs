use std::path::{Path, PathBuf};
use std::process::ExitCode;

use alias_server::config::Config;
use alias_server::startup::Application;
use alias_server::{backup, bindings, crypto, db, keys, telemetry, users};
use clap::{Parser, Subcommand};

/// The ALIAS backend. Without a subcommand it serves.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run migrations, then serve the API (the default).
    Serve,
    /// Bring the database schema up to date, then exit.
    Migrate,
    /// Write the TypeScript bindings.
    ExportBindings {
        #[arg(long, default_value = "bindings")]
        out: PathBuf,
    },
    /// Copy the SQLite database to PATH (a new file) while the server serves.
    Backup { path: PathBuf },
    /// Put the SQLite backup at PATH in place of the database (the server must be stopped;
    /// the database it replaces is kept beside it).
    Restore { path: PathBuf },
    /// Maintain the sealed API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage accounts.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Set an account's tier (free, plus or pro), which sets its daily quotas.
    SetTier { email: String, tier: String },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-wrap every data key under the current master key or KMS key (after a rotation).
    /// Safe to interrupt and run again.
    Rewrap,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::ExportBindings { out }) = &cli.command {
        return report(bindings::write(out));
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let telemetry = telemetry::init(
        config.log_format,
        &config.log_filter,
        config.otlp_endpoint.is_some(),
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return report(Err(error.into())),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Migrate) => migrate(&config).await,
            Some(Command::Backup { path }) => backup::backup(&config, &path)
                .await
                .map(|report| println!("{}", describe(&report, "backed up to"))),
            Some(Command::Restore { path }) => restore(&config, &path).await,
            Some(Command::Keys {
                command: KeysCommand::Rewrap,
            }) => rewrap(&config).await,
            Some(Command::Users {
                command: UsersCommand::SetTier { email, tier },
            }) => set_tier(&config, &email, &tier).await,
            _ => serve(config).await,
        }
    });
    telemetry.shutdown();
    report(result)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    tracing::info!(address = %app.local_addr()?, "listening");
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    app.run_until_stopped().await?;
    Ok(())
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    db::open(config).await?;
    tracing::info!("database is up to date");
    Ok(())
}

async fn restore(config: &Config, path: &Path) -> anyhow::Result<()> {
    let report = backup::restore(config, path).await?;
    println!("{}", describe(&report, "restored to"));
    if let Some(replaced) = &report.replaced {
        println!("the database it replaced is kept at {}", replaced.display());
    }
    Ok(())
}

fn describe(report: &backup::Report, done: &str) -> String {
    format!(
        "{done} {} ({} bytes, schema {})",
        report.path.display(),
        report.bytes,
        report.schema
    )
}

async fn rewrap(config: &Config) -> anyhow::Result<()> {
    let db = db::open(config).await?;
    let vault = crypto::vault_from_config(&config.key_vault, &config.data_dir, false).await?;
    let report = keys::rewrap_all(&db, vault.as_ref()).await?;
    println!(
        "rewrapped {} API keys under {} ({} failed)",
        report.rewrapped,
        vault.describe(),
        report.failed
    );
    if report.failed > 0 {
        anyhow::bail!(
            "{} keys could not be rewrapped; see the log, fix, and run again",
            report.failed
        );
    }
    Ok(())
}

async fn set_tier(config: &Config, email: &str, tier: &str) -> anyhow::Result<()> {
    // Refused before the database is opened (and migrated) when the tier is not one.
    if users::Tier::parse(&tier.trim().to_lowercase()).is_none() {
        anyhow::bail!(users::SetTierError::UnknownTier(tier.to_owned()));
    }
    let db = db::open(config).await?;
    let tier = users::set_tier(&db, email, tier).await?;
    println!("{} is now on the {} tier", email.trim(), tier.as_str());
    Ok(())
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
