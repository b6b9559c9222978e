//! bigd-bench: a load generator that measures any Matrix homeserver through the
//! standard Client-Server API (docs/performance.md).
//!
//! `bigd-bench --url http://127.0.0.1:8008 <scenario> [options]` prints one JSON
//! object (parameters and results) on stdout and progress on stderr. Exit status:
//! 0 all good, 1 the measurement ran but saw errors or failed a check, 2 usage
//! error or failed setup.

#[path = "bigd_bench/client.rs"]
mod client;
#[path = "bigd_bench/media.rs"]
mod media;
#[cfg(test)]
#[path = "bigd_bench/mock.rs"]
mod mock;
#[path = "bigd_bench/push.rs"]
mod push;
#[path = "bigd_bench/scenarios.rs"]
mod scenarios;
#[path = "bigd_bench/stats.rs"]
mod stats;
#[path = "bigd_bench/ws.rs"]
mod ws;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;

use client::Client;
use scenarios::{Ctx, Outcome};
use stats::Probe;

#[derive(Parser, Debug)]
#[command(
    name = "bigd-bench",
    about = "Measures a Matrix homeserver through the Client-Server API",
    after_help = "The server's rate limits must be off (bigd: BIGD_RATE_LIMITS__ENABLED=false)."
)]
struct Cli {
    /// Base URL of the homeserver (plain HTTP).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8008")]
    url: String,
    /// Register with this `m.login.registration_token` instead of `m.login.dummy`.
    #[arg(long, global = true)]
    registration_token: Option<String>,
    /// PID of the server process (same machine): report its CPU time and memory.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Username prefix (lowercase letters, digits, '.', '_', '-'); default: 6 random characters.
    #[arg(long, global = true)]
    prefix: Option<String>,
    /// Parallel requests during setup, and in the register scenario.
    #[arg(long, global = true, default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    concurrency: u64,
    /// Timeout of one request in seconds (/sync: its long-poll timeout + 10 s).
    #[arg(long, global = true, default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    timeout: u64,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Registers users; registrations/s and latency.
    Register {
        /// Accounts to register.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        users: u64,
    },
    /// K users send M messages each into one room at once; messages/s and latency.
    Send {
        /// Users sending at once (each sends its messages one after another).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1000))]
        senders: u64,
        /// Messages per sender.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        messages: u64,
    },
    /// Fills a room, then pages backward through all of it with /messages.
    History {
        /// Messages to fill the room with (sent by 8 users at once, not measured).
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        events: u64,
        /// Events per page (`limit`).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page: u32,
        /// Full walks through the room.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
        rounds: u64,
        /// Walk this room, filled by an earlier run with the same --prefix (and
        /// --events), instead of filling a new one: e.g. after a server restart.
        #[arg(long)]
        reuse_room: Option<String>,
    },
    /// One sender at a fixed rate, R receivers long-polling /sync; delivery latency.
    Fanout {
        /// Users long-polling /sync in the room.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        receivers: u64,
        /// Messages per second.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// How long to send.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        seconds: u64,
        /// How long to wait after the last send for receivers to catch up.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=600))]
        grace: u64,
    },
    /// The fanout scenario over /sync long-poll and over bigd's WebSocket
    /// transport (messages sent over a socket too), in alternating rounds;
    /// both latencies side by side.
    WsFanout {
        /// Receivers in the room (each transport registers its own).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        receivers: u64,
        /// Messages per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// How long each transport sends, over all its rounds.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        seconds: u64,
        /// How long to wait after a round's last send for receivers to catch up.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=600))]
        grace: u64,
        /// Start each other pair of rounds with the sockets (the first pair
        /// included); without it the first pair starts with /sync.
        #[arg(long)]
        sockets_first: bool,
        /// Rounds per transport; 1 runs one transport after the other.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        rounds: u64,
    },
    /// A group of M members, each with a pusher to a push gateway this tool
    /// runs on loopback; one sender at a fixed rate. Notifications/s and the
    /// latency from send to gateway.
    PushFanout {
        /// Members of the room (besides the sender), each with a pusher.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        members: u64,
        /// Messages per second.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// How long to send.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        seconds: u64,
        /// How long to wait after the last send for the notifications.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=600))]
        grace: u64,
        /// Set no pushers: the same sends without push delivery, to compare
        /// send latency.
        #[arg(long)]
        no_pushers: bool,
    },
    /// Uploads and downloads a large file R times (MB/s), then thumbnails T
    /// distinct images twice: made, then from the cache (thumbnails/s).
    Media {
        /// Size of the file, in MiB.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1024))]
        size_mb: u64,
        /// Uploads (and downloads).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
        rounds: u64,
        /// Distinct 1024x768 PNGs to thumbnail.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        thumbnails: u64,
    },
    /// Opens S WebSockets (spread over U users), each subscribed to sync, and
    /// holds them idle; how many stay open and the server's memory.
    WsIdle {
        /// Users the sockets belong to.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        users: u64,
        /// Sockets to open.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        sockets: u64,
        /// Seconds to hold them once open.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        hold: u64,
    },
    /// One user in Q rooms of M messages; times /sync without a since token.
    InitialSync {
        /// Rooms the user is in.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        rooms: u64,
        /// Messages per room.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=100_000))]
        messages: u64,
        /// Initial syncs to time, one after another.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        rounds: u64,
        /// A filter (JSON or a filter id) to send with each sync.
        #[arg(long)]
        filter: Option<String>,
        /// Time incremental syncs with nothing new (`since` = the token of one
        /// initial sync, `timeout=0`) instead of initial syncs.
        #[arg(long)]
        incremental: bool,
    },
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Register { .. } => "register",
            Scenario::Send { .. } => "send",
            Scenario::History { .. } => "history",
            Scenario::Fanout { .. } => "fanout",
            Scenario::WsFanout { .. } => "ws-fanout",
            Scenario::WsIdle { .. } => "ws-idle",
            Scenario::PushFanout { .. } => "push-fanout",
            Scenario::Media { .. } => "media",
            Scenario::InitialSync { .. } => "initial-sync",
        }
    }
}

fn random_prefix() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 6];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (nanos as u64).to_le_bytes()[..6]
            .try_into()
            .unwrap_or([0; 6]);
    }
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn valid_prefix(p: &str) -> bool {
    (1..=32).contains(&p.len())
        && p.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

async fn run(ctx: &Ctx, scenario: &Scenario) -> Outcome {
    let n = |x: u64| x as usize;
    match *scenario {
        Scenario::Register { users } => scenarios::register(ctx, n(users)).await,
        Scenario::Send { senders, messages } => scenarios::send(ctx, n(senders), n(messages)).await,
        Scenario::History {
            events,
            page,
            rounds,
            ref reuse_room,
        } => scenarios::history(ctx, n(events), page, n(rounds), reuse_room.as_deref()).await,
        Scenario::Fanout {
            receivers,
            rate,
            seconds,
            grace,
        } => scenarios::fanout(ctx, n(receivers), rate, seconds, grace).await,
        Scenario::WsFanout {
            receivers,
            rate,
            seconds,
            grace,
            sockets_first,
            rounds,
        } => {
            ws::ws_fanout(
                ctx,
                n(receivers),
                rate,
                seconds,
                grace,
                sockets_first,
                rounds,
            )
            .await
        }
        Scenario::WsIdle {
            users,
            sockets,
            hold,
        } => ws::ws_idle(ctx, n(users), n(sockets), hold).await,
        Scenario::Media {
            size_mb,
            rounds,
            thumbnails,
        } => media::media(ctx, n(size_mb), n(rounds), n(thumbnails)).await,
        Scenario::PushFanout {
            members,
            rate,
            seconds,
            grace,
            no_pushers,
        } => push::push_fanout(ctx, n(members), rate, seconds, grace, !no_pushers).await,
        Scenario::InitialSync {
            rooms,
            messages,
            rounds,
            ref filter,
            incremental,
        } => {
            let filter = filter.as_deref();
            scenarios::initial_sync(ctx, n(rooms), n(messages), n(rounds), filter, incremental)
                .await
        }
    }
}

/// Checks the options clap cannot, and builds the run's context.
fn context(cli: &Cli) -> Result<Ctx, String> {
    if !cli.url.starts_with("http://") {
        return Err(format!(
            "--url must be a plain http:// URL (this tool speaks no TLS): {}",
            cli.url
        ));
    }
    if let Scenario::Fanout { rate, .. }
    | Scenario::WsFanout { rate, .. }
    | Scenario::PushFanout { rate, .. } = cli.scenario
        && !(rate > 0.0 && rate <= 10_000.0)
    {
        return Err("--rate must be above 0 and at most 10000 messages per second".into());
    }
    if let Scenario::History {
        reuse_room: Some(_),
        ..
    } = cli.scenario
        && cli.prefix.is_none()
    {
        return Err("--reuse-room needs the --prefix of the run that filled the room".into());
    }
    let prefix = cli.prefix.clone().unwrap_or_else(random_prefix);
    if !valid_prefix(&prefix) {
        return Err(format!(
            "--prefix must be 1-32 of a-z 0-9 . _ - (it starts user names): {prefix:?}"
        ));
    }
    let probe = cli.server_pid.map(Probe::new).transpose()?;
    let concurrency = cli.concurrency as usize;
    let pool = match cli.scenario {
        Scenario::Send { senders, .. } => senders as usize,
        Scenario::Fanout { receivers, .. } | Scenario::WsFanout { receivers, .. } => {
            receivers as usize + 1
        }
        _ => 8,
    }
    .max(concurrency)
        + 4;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    Ok(Ctx {
        anon: Client::anonymous(http, &cli.url, Duration::from_secs(cli.timeout)),
        registration_token: cli.registration_token.clone(),
        prefix,
        concurrency,
        probe,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    bigd::util::install_tls_provider();
    let cli = Cli::parse();
    let scenario = cli.scenario.name();
    let ctx = match context(&cli) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("bigd-bench: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "bigd-bench {scenario} against {} (user prefix {})",
        cli.url, ctx.prefix
    );
    let outcome = run(&ctx, &cli.scenario).await;
    let (output, code) = match outcome {
        Ok(report) => {
            let code = if report.errors.total() > 0 || report.failed_check {
                1
            } else {
                0
            };
            (
                json!({
                    "scenario": scenario,
                    "url": cli.url,
                    "prefix": ctx.prefix,
                    "ok": code == 0,
                    "params": report.params,
                    "results": report.results,
                    "errors": report.errors.to_json(),
                    "server": report.server,
                    "bench_cpu_seconds": report.bench_cpu_seconds,
                }),
                code,
            )
        }
        Err(e) => {
            eprintln!("bigd-bench: {e}");
            (
                json!({ "scenario": scenario, "url": cli.url, "prefix": ctx.prefix, "ok": false, "error": e }),
                2,
            )
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&output).unwrap_or_else(|_| output.to_string())
    );
    ExitCode::from(code)
}
