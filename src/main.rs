//! The `bigd` command: serve the homeserver, or run an admin task on the data folder.

use std::{path::PathBuf, process::ExitCode};

use bigd::{Server, Services, config::Config};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "bigd", version, about = "The homeserver of BIG Messenger")]
struct Cli {
    /// TOML configuration file (defaults apply without one; BIGD_* variables override).
    #[arg(long, short, global = true, env = "BIGD_CONFIG_FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the homeserver (the default).
    Serve,
    /// Create an account (works on the data folder; stop the server first).
    CreateUser {
        /// The localpart, e.g. `alice` for @alice:server.
        #[arg(long)]
        username: String,
        /// The password (prefer --password-file or BIGD_ADMIN_PASSWORD to keep it out of shell history).
        #[arg(long, env = "BIGD_ADMIN_PASSWORD")]
        password: Option<String>,
        /// Read the password from this file (first line).
        #[arg(long, conflicts_with = "password")]
        password_file: Option<PathBuf>,
    },
    /// Set a new password for an account and log out all its devices.
    ResetPassword {
        /// The full user id or the localpart.
        #[arg(long)]
        user: String,
        #[arg(long, env = "BIGD_ADMIN_PASSWORD")]
        password: Option<String>,
        #[arg(long, conflicts_with = "password")]
        password_file: Option<PathBuf>,
    },
    /// Create a registration token for `m.login.registration_token`.
    CreateRegistrationToken {
        /// The token (random when omitted): 1-64 of A-Z a-z 0-9 . _ ~ -
        #[arg(long)]
        token: Option<String>,
        /// How many registrations may use it (unlimited when omitted).
        #[arg(long)]
        uses: Option<u64>,
        /// Days until it expires (never when omitted).
        #[arg(long)]
        expires_in_days: Option<u64>,
    },
    /// Delete every media file a user uploaded (content shared with other
    /// users' uploads stays for them).
    DeleteUserMedia {
        /// The full user id or the localpart.
        #[arg(long)]
        user: String,
    },
}

fn main() -> ExitCode {
    return_large_allocations_to_the_os();
    raise_open_files_limit();
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bigd: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    let result = runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bigd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Password hashing allocates 19 MiB at a time; glibc would keep those blocks
/// in its per-thread arenas after they are freed, so RSS would only grow. Serving
/// allocations of 1 MiB and more with mmap hands them back on free.
fn return_large_allocations_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc tunable; it is called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Every WebSocket and long-poll holds a file descriptor; the usual soft limit
/// (1024) would cap the server far below what it can hold, so it takes the
/// hard limit the operator allows.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if config.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(command: Command, config: Config) -> Result<(), String> {
    match command {
        Command::Serve => serve(config).await,
        Command::CreateUser {
            username,
            password,
            password_file,
        } => {
            let password = read_password(password, password_file)?;
            let services = open_offline(config)?;
            let user = services
                .auth
                .create_user_admin(&username, password)
                .await
                .map_err(|e| e.to_string())?;
            println!("created {user}");
            Ok(())
        }
        Command::ResetPassword {
            user,
            password,
            password_file,
        } => {
            let password =
                read_password(password, password_file)?.ok_or("a new password is required")?;
            let services = open_offline(config)?;
            let user = bigd::auth::parse_user_input(&user, services.users.server_name())
                .map_err(|_| format!("'{user}' is not a valid user id"))?;
            services
                .auth
                .reset_password_admin(&user, password)
                .await
                .map_err(|e| e.to_string())?;
            println!("password of {user} reset; all its devices are logged out");
            Ok(())
        }
        Command::CreateRegistrationToken {
            token,
            uses,
            expires_in_days,
        } => {
            let services = open_offline(config)?;
            let expiry = expires_in_days.map(|d| bigd::util::now_ms() + d * 24 * 3600 * 1000);
            let token = services
                .auth
                .registration_tokens
                .create(token, uses, expiry)
                .map_err(|e| e.to_string())?;
            println!("{token}");
            Ok(())
        }
        Command::DeleteUserMedia { user } => {
            let services = open_offline(config)?;
            let user = bigd::auth::parse_user_input(&user, services.users.server_name())
                .map_err(|_| format!("'{user}' is not a valid user id"))?;
            let deleted = services
                .media
                .delete_user_media(&user)
                .map_err(|e| e.to_string())?;
            println!("deleted {deleted} media of {user}");
            Ok(())
        }
    }
}

fn read_password(
    password: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<String>, String> {
    match (password, file) {
        (Some(p), _) => Ok(Some(p)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Ok(Some(text.lines().next().unwrap_or_default().to_owned()))
        }
        (None, None) => Ok(None),
    }
}

fn open_offline(config: Config) -> Result<std::sync::Arc<Services>, String> {
    Services::open(config).map_err(|e| {
        let e = e.to_string();
        if e.contains("lock") {
            format!("{e}\n(is the server running? admin commands need it stopped)")
        } else {
            e
        }
    })
}

async fn serve(config: Config) -> Result<(), String> {
    let mut server = Server::start(config).await.map_err(|e| e.to_string())?;
    let outcome = tokio::select! {
        result = server.wait() => result.map_err(|e| e.to_string()),
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    };
    // Bounded: requests still running after the grace period are cut off.
    let stopped = server.shutdown().await.map_err(|e| e.to_string());
    outcome.and(stopped)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
