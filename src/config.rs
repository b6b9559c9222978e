//! Typed configuration. Defaults are the embedded single-machine setup, so bigd
//! runs with no file at all; a TOML file and `BIGD_*` environment variables
//! override them, in that order.

use std::{net::SocketAddr, path::PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use ruma::OwnedServerName;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The Matrix server name: the part after the colon in user ids.
    pub server_name: OwnedServerName,
    /// Socket addresses the client API listens on.
    pub listen: Vec<SocketAddr>,
    /// RocksDB, keys and media live under this folder.
    pub data_dir: PathBuf,
    /// The URL clients reach this server at (served in `.well-known/matrix/client`).
    /// Unset: `http://<first listen address>`.
    pub public_baseurl: Option<String>,
    /// Log filter in `tracing` syntax (`RUST_LOG` wins when set).
    pub log: String,
    /// Log lines as JSON instead of text.
    pub log_json: bool,
    pub registration: RegistrationConfig,
    pub auth: AuthConfig,
    pub rate_limits: RateLimitsConfig,
    pub well_known: WellKnownConfig,
    pub http: HttpConfig,
    pub presence: PresenceConfig,
    pub websocket: WebSocketConfig,
    pub push: PushConfig,
    pub outbox: OutboxConfig,
    pub media: MediaConfig,
    pub turn: TurnConfig,
    pub sms: SmsConfig,
    pub messenger: MessengerConfig,
    /// AI bots and the model they use (see docs/ai.md).
    pub ai: crate::ai::AiConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    pub enabled: bool,
    /// Require an `m.login.registration_token` stage (tokens from `bigd create-registration-token`).
    pub tokens_required: bool,
    /// Allow open registration (enabled, no token) on a non-loopback listener.
    pub open_on_public_listener: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Lifetime of access tokens issued with a refresh token (`refresh_token: true`).
    pub refreshable_access_token_lifetime_ms: u64,
    /// How long an unfinished user-interactive auth session stays valid.
    pub uia_session_lifetime_ms: u64,
    /// Minimum password length for registration and password changes.
    pub min_password_length: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    pub enabled: bool,
    /// Login attempts per client IP.
    pub login_per_ip: RateLimit,
    /// Login attempts per account (any IP).
    pub login_per_account: RateLimit,
    /// Registration attempts per client IP.
    pub register_per_ip: RateLimit,
    /// Phone numbers (or hashes) a user may look up through contact upload
    /// and identity `lookup`, counted per number: a phone book fits, an
    /// enumeration of a number range does not.
    pub contact_lookups_per_user: RateLimit,
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WellKnownConfig {
    /// `m.server` in `/.well-known/matrix/server` (e.g. "matrix.example.org:443").
    /// Unset: the endpoint answers 404, as a server without delegation does.
    pub server: Option<String>,
    /// `m.homeserver.base_url` in `/.well-known/matrix/client`. Unset: `public_baseurl`.
    pub client: Option<String>,
    /// `support_page` in `/.well-known/matrix/support`.
    pub support_page: Option<String>,
    /// `contacts` in `/.well-known/matrix/support`. With neither this nor
    /// `support_page`, the endpoint answers 404.
    pub support_contacts: Vec<SupportContact>,
}

/// An admin or security contact published in `/.well-known/matrix/support`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SupportContact {
    /// `m.role.admin` or `m.role.security`.
    pub role: String,
    pub matrix_id: Option<String>,
    pub email_address: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Track and share presence (online, unavailable, offline, last seen).
    pub enabled: bool,
    /// A user with no activity for this long shows as `unavailable`.
    pub idle_timeout_ms: u64,
    /// A user none of whose devices has synced for this long shows as `offline`.
    pub offline_timeout_ms: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_timeout_ms: 5 * 60 * 1000,
            offline_timeout_ms: 30 * 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// How often the server pings each socket; one that stays silent for two
    /// intervals is closed.
    pub ping_interval_ms: u64,
    /// Frames queued for a socket before it is closed as too slow.
    pub max_queued_frames: usize,
    /// Largest frame a client may send, in bytes.
    pub max_frame_bytes: usize,
    /// Requests one socket may have in flight at once.
    pub max_concurrent_requests: usize,
    /// How long a socket without an Authorization header has to send its auth frame.
    pub auth_timeout_ms: u64,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            ping_interval_ms: 30_000,
            max_queued_frames: 256,
            max_frame_bytes: 1024 * 1024,
            max_concurrent_requests: 32,
            auth_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Send notifications to the users' pushers (push gateways). Counts and
    /// `/notifications` work either way.
    pub enabled: bool,
    /// How long one request to a push gateway may take.
    pub gateway_timeout_ms: u64,
    /// A notification still undelivered after this long (a gateway down for
    /// hours) is dropped instead of ringing a phone about old news.
    pub max_notification_age_ms: u64,
    /// How long `GET /notifications` keeps a notification.
    pub notification_retention_ms: u64,
    /// The badge (`counts.unread`) counts rooms with unread notifications
    /// (true, as Synapse does) or the notifications themselves (false).
    pub group_unread_count_by_room: bool,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            gateway_timeout_ms: 10_000,
            max_notification_age_ms: 24 * 3600 * 1000,
            notification_retention_ms: 30 * 24 * 3600 * 1000,
            group_unread_count_by_room: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// First wait before retrying a destination that failed; doubles (with
    /// jitter) on each further failure.
    pub retry_initial_ms: u64,
    /// Longest wait between retries.
    pub retry_max_ms: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            retry_initial_ms: 1_000,
            retry_max_ms: 10 * 60 * 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Largest upload, in bytes (`m.upload.size`).
    pub max_upload_size: u64,
    /// Serve the deprecated unauthenticated `/_matrix/media/v3/download` and
    /// `/thumbnail`. Off freezes them (404) as Synapse's
    /// `enable_authenticated_media` does.
    pub legacy_unauthenticated: bool,
    /// Media ids a user may hold from `POST /media/v1/create` without having
    /// uploaded to them yet.
    pub max_pending_uploads: usize,
    /// How long such an id waits for its upload.
    pub pending_upload_expiry_ms: u64,
    /// The thumbnail sizes made; a request gets the smallest of its method
    /// that is at least as large as asked.
    pub thumbnail_sizes: Vec<ThumbnailSize>,
    /// Images with more pixels than this are not decoded for thumbnails
    /// (decompression bombs get 413).
    pub max_thumbnail_pixels: u64,
    /// Delete media older than this (0: keep forever).
    pub retention_max_age_ms: u64,
    /// Delete the oldest media while the store holds more than this many
    /// bytes (0: no budget).
    pub max_total_bytes: u64,
    pub url_preview: UrlPreviewConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    /// `scale` (fit inside, keep the aspect) or `crop` (fill exactly).
    pub method: String,
}

impl ThumbnailSize {
    fn new(width: u32, height: u32, method: &str) -> Self {
        Self {
            width,
            height,
            method: method.into(),
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_upload_size: 50 * 1024 * 1024,
            legacy_unauthenticated: true,
            max_pending_uploads: 5,
            pending_upload_expiry_ms: 24 * 3600 * 1000,
            thumbnail_sizes: vec![
                ThumbnailSize::new(32, 32, "crop"),
                ThumbnailSize::new(96, 96, "crop"),
                ThumbnailSize::new(320, 240, "scale"),
                ThumbnailSize::new(640, 480, "scale"),
                ThumbnailSize::new(800, 600, "scale"),
            ],
            max_thumbnail_pixels: 32_000_000,
            retention_max_age_ms: 0,
            max_total_bytes: 0,
            url_preview: UrlPreviewConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UrlPreviewConfig {
    /// Serve `preview_url` (the server fetches pages users post).
    pub enabled: bool,
    /// Addresses never fetched (CIDR), checked on every address a name
    /// resolves to and on every redirect.
    pub ip_range_denylist: Vec<String>,
    /// Exceptions to the deny-list.
    pub ip_range_allowlist: Vec<String>,
    /// Most bytes read of a page (or an image).
    pub max_page_bytes: usize,
    /// Time limit of one fetch, redirects included.
    pub timeout_ms: u64,
}

impl Default for UrlPreviewConfig {
    fn default() -> Self {
        let deny = [
            "127.0.0.0/8",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "192.0.0.0/24",
            "169.254.0.0/16",
            "192.88.99.0/24",
            "198.18.0.0/15",
            "192.0.2.0/24",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "224.0.0.0/4",
            "240.0.0.0/4",
            "0.0.0.0/8",
            "::1/128",
            "::/128",
            "fe80::/10",
            "fc00::/7",
            "2001:db8::/32",
            "ff00::/8",
            "fec0::/10",
        ];
        Self {
            enabled: false,
            ip_range_denylist: deny.iter().map(|s| (*s).to_owned()).collect(),
            ip_range_allowlist: Vec::new(),
            max_page_bytes: 1024 * 1024,
            timeout_ms: 10_000,
        }
    }
}

/// Where SMS codes go (sign-in by SMS and phone-number verification).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmsProvider {
    /// Writes the code to the server log: for a local setup.
    Log,
    /// POSTs `{to, text}` as JSON to `webhook_url`, signed with `webhook_secret`.
    Webhook,
    /// Twilio's Messages API.
    Twilio,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    pub provider: SmsProvider,
    /// Signing in with the code of a number no account has creates an account.
    pub auto_register: bool,
    /// The webhook provider's URL.
    pub webhook_url: Option<String>,
    /// The key of the `X-Bigd-Signature` header (hex HMAC-SHA256 of the body).
    pub webhook_secret: Option<String>,
    /// Twilio account SID, auth token and sending number (or messaging service SID).
    pub twilio_account_sid: Option<String>,
    pub twilio_auth_token: Option<String>,
    pub twilio_from: Option<String>,
    /// The Twilio API base URL (changed only for tests or a proxy).
    pub twilio_api_base: String,
    /// How long a code stays valid.
    pub code_lifetime_ms: u64,
    /// How long before another code may be sent to the same number.
    pub resend_interval_ms: u64,
    /// Wrong codes allowed per code before its session is dead.
    pub max_attempts: u32,
    /// How long one request to the provider may take.
    pub send_timeout_ms: u64,
    /// Codes sent per phone number (honours `rate_limits.enabled`).
    pub rate_limit_per_number: RateLimit,
    /// Codes requested per client IP (honours `rate_limits.enabled`).
    pub rate_limit_per_ip: RateLimit,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            provider: SmsProvider::Log,
            auto_register: true,
            webhook_url: None,
            webhook_secret: None,
            twilio_account_sid: None,
            twilio_auth_token: None,
            twilio_from: None,
            twilio_api_base: "https://api.twilio.com".into(),
            code_lifetime_ms: 10 * 60 * 1000,
            resend_interval_ms: 60 * 1000,
            max_attempts: 5,
            send_timeout_ms: 10_000,
            rate_limit_per_number: RateLimit {
                per_second: 0.002,
                burst: 5,
            },
            rate_limit_per_ip: RateLimit {
                per_second: 0.02,
                burst: 10,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// TURN server URIs handed to clients for calls (`GET /voip/turnServer`),
    /// e.g. "turn:turn.example.org:3478?transport=udp". Empty: no TURN.
    pub uris: Vec<String>,
    /// The TURN server's shared secret (coturn `static-auth-secret`): each
    /// user gets a time-limited username and an HMAC password from it.
    pub shared_secret: Option<String>,
    /// Fixed credentials instead of a shared secret.
    pub username: Option<String>,
    pub password: Option<String>,
    /// How long credentials from the shared secret stay valid.
    pub user_lifetime_ms: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            uris: Vec::new(),
            shared_secret: None,
            username: None,
            password: None,
            user_lifetime_ms: 24 * 3600 * 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessengerConfig {
    /// Record `ai.iambig.delivered` receipts when devices acknowledge syncs.
    pub delivered_receipts: bool,
    /// Who may see when a user was last active (`last_seen/{userId}`):
    /// "shared_room" (those sharing a room with them), "everyone" or "nobody".
    pub last_seen: String,
    /// Serve phone book upload and number lookups (`contacts`, the identity
    /// `hash_details` and `lookup`).
    pub contact_discovery: bool,
}

impl Default for MessengerConfig {
    fn default() -> Self {
        Self {
            delivered_receipts: true,
            last_seen: "shared_room".into(),
            contact_discovery: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body for API requests, in bytes.
    pub max_request_bytes: usize,
    /// Take the client IP from `X-Forwarded-For` (only behind a trusted reverse proxy).
    pub trust_forwarded_for: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".try_into().expect("valid server name"),
            listen: vec!["127.0.0.1:8008".parse().expect("valid address")],
            data_dir: PathBuf::from("./bigd-data"),
            public_baseurl: None,
            log: "info".into(),
            log_json: false,
            registration: RegistrationConfig::default(),
            auth: AuthConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            well_known: WellKnownConfig::default(),
            http: HttpConfig::default(),
            presence: PresenceConfig::default(),
            websocket: WebSocketConfig::default(),
            push: PushConfig::default(),
            outbox: OutboxConfig::default(),
            media: MediaConfig::default(),
            turn: TurnConfig::default(),
            sms: SmsConfig::default(),
            messenger: MessengerConfig::default(),
            ai: crate::ai::AiConfig::default(),
        }
    }
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tokens_required: false,
            open_on_public_listener: false,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            refreshable_access_token_lifetime_ms: 5 * 60 * 1000,
            uia_session_lifetime_ms: 15 * 60 * 1000,
            min_password_length: 8,
        }
    }
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            login_per_ip: RateLimit {
                per_second: 0.2,
                burst: 10,
            },
            login_per_account: RateLimit {
                per_second: 0.1,
                burst: 5,
            },
            register_per_ip: RateLimit {
                per_second: 0.2,
                burst: 5,
            },
            contact_lookups_per_user: RateLimit {
                per_second: 0.5,
                burst: 20_000,
            },
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 1024 * 1024,
            trust_forwarded_for: false,
        }
    }
}

/// A configuration problem, naming the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Defaults, then the TOML file (if any), then `BIGD_*` environment variables.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // BIGD_CONFIG_FILE and BIGD_ADMIN_PASSWORD are CLI inputs, not config keys.
        let env = Env::prefixed("BIGD_")
            .ignore(&["config_file", "admin_password"])
            .split("__");
        figment = figment.merge(env);
        let config: Config = figment.extract().map_err(|e| ConfigError(describe(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot: relations between keys and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, what: &str| Err(ConfigError(format!("`{key}`: {what}")));
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return err("log", &format!("not a valid log filter: {e}"));
        }
        if self.listen.is_empty() {
            return err(
                "listen",
                "needs at least one socket address, e.g. [\"127.0.0.1:8008\"]",
            );
        }
        let reg = &self.registration;
        if reg.enabled
            && !reg.tokens_required
            && !reg.open_on_public_listener
            && let Some(public) = self.listen.iter().find(|a| !a.ip().is_loopback())
        {
            return err(
                "registration.open_on_public_listener",
                &format!(
                    "open registration (registration.enabled = true, tokens_required = false) \
                         is refused on the non-loopback listener {public}: anyone could create \
                         accounts. Set registration.tokens_required = true, or \
                         registration.enabled = false, or registration.open_on_public_listener = \
                         true if you really want it"
                ),
            );
        }
        if let Some(url) = &self.public_baseurl
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return err("public_baseurl", "must be an http:// or https:// URL");
        }
        if let Some(url) = &self.well_known.client
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return err("well_known.client", "must be an http:// or https:// URL");
        }
        for (i, contact) in self.well_known.support_contacts.iter().enumerate() {
            if contact.matrix_id.is_none() && contact.email_address.is_none() {
                return err(
                    &format!("well_known.support_contacts[{i}]"),
                    "needs a matrix_id or an email_address",
                );
            }
            if contact.role.is_empty() {
                return err(
                    &format!("well_known.support_contacts[{i}].role"),
                    "must not be empty",
                );
            }
        }
        if !matches!(
            self.messenger.last_seen.as_str(),
            "shared_room" | "everyone" | "nobody"
        ) {
            return err(
                "messenger.last_seen",
                "must be \"shared_room\", \"everyone\" or \"nobody\"",
            );
        }
        if self.auth.refreshable_access_token_lifetime_ms < 1_000 {
            return err(
                "auth.refreshable_access_token_lifetime_ms",
                "must be at least 1000 (1 s)",
            );
        }
        if self.auth.uia_session_lifetime_ms < 10_000 {
            return err(
                "auth.uia_session_lifetime_ms",
                "must be at least 10000 (10 s)",
            );
        }
        let media = &self.media;
        if media.max_upload_size < 1024 {
            return err("media.max_upload_size", "must be at least 1024");
        }
        for (i, size) in media.thumbnail_sizes.iter().enumerate() {
            if size.width == 0
                || size.height == 0
                || !matches!(size.method.as_str(), "scale" | "crop")
            {
                return err(
                    &format!("media.thumbnail_sizes[{i}]"),
                    "needs width and height above 0 and method \"scale\" or \"crop\"",
                );
            }
        }
        for (key, list) in [
            (
                "media.url_preview.ip_range_denylist",
                &media.url_preview.ip_range_denylist,
            ),
            (
                "media.url_preview.ip_range_allowlist",
                &media.url_preview.ip_range_allowlist,
            ),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|r| crate::media::iprange::IpRange::parse(r).is_none())
            {
                return err(
                    key,
                    &format!("{bad:?} is not an address range like 10.0.0.0/8 or fc00::/7"),
                );
            }
        }
        let turn = &self.turn;
        if !turn.uris.is_empty()
            && turn.shared_secret.is_none()
            && (turn.username.is_none() || turn.password.is_none())
        {
            return err(
                "turn.uris",
                "TURN needs turn.shared_secret, or turn.username and turn.password",
            );
        }
        if turn.user_lifetime_ms < 60_000 {
            return err("turn.user_lifetime_ms", "must be at least 60000 (1 min)");
        }
        if self.push.gateway_timeout_ms < 100 {
            return err("push.gateway_timeout_ms", "must be at least 100");
        }
        if self.outbox.retry_initial_ms < 10 {
            return err("outbox.retry_initial_ms", "must be at least 10");
        }
        if self.outbox.retry_max_ms < self.outbox.retry_initial_ms {
            return err(
                "outbox.retry_max_ms",
                "must be at least outbox.retry_initial_ms",
            );
        }
        if self.presence.idle_timeout_ms < 1000 {
            return err("presence.idle_timeout_ms", "must be at least 1000 (1 s)");
        }
        if self.presence.offline_timeout_ms < 1000 {
            return err("presence.offline_timeout_ms", "must be at least 1000 (1 s)");
        }
        let ws = &self.websocket;
        if ws.ping_interval_ms < 100 {
            return err("websocket.ping_interval_ms", "must be at least 100");
        }
        if ws.max_queued_frames == 0 || ws.max_concurrent_requests == 0 {
            return err(
                "websocket",
                "max_queued_frames and max_concurrent_requests must be at least 1",
            );
        }
        if ws.max_frame_bytes < 4096 {
            return err("websocket.max_frame_bytes", "must be at least 4096");
        }
        if self.http.max_request_bytes < 4096 {
            return err("http.max_request_bytes", "must be at least 4096");
        }
        for (key, limit) in [
            ("rate_limits.login_per_ip", self.rate_limits.login_per_ip),
            (
                "rate_limits.login_per_account",
                self.rate_limits.login_per_account,
            ),
            (
                "rate_limits.register_per_ip",
                self.rate_limits.register_per_ip,
            ),
            (
                "rate_limits.contact_lookups_per_user",
                self.rate_limits.contact_lookups_per_user,
            ),
        ] {
            if !(limit.per_second.is_finite() && limit.per_second > 0.0) {
                return err(key, "per_second must be a positive number");
            }
            if limit.burst == 0 {
                return err(key, "burst must be at least 1");
            }
        }
        if let Some((key, what)) = self.ai.problem(&self.server_name) {
            return err(&key, &what);
        }
        self.validate_sms()?;
        Ok(())
    }

    fn validate_sms(&self) -> Result<(), ConfigError> {
        let err = |key: &str, what: &str| Err(ConfigError(format!("`sms.{key}`: {what}")));
        let sms = &self.sms;
        let is_http = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        match sms.provider {
            SmsProvider::Log => {}
            SmsProvider::Webhook => {
                if !sms.webhook_url.as_deref().is_some_and(is_http) {
                    return err(
                        "webhook_url",
                        "the webhook provider needs an http:// or https:// URL",
                    );
                }
                if sms.webhook_secret.as_deref().is_none_or(str::is_empty) {
                    return err("webhook_secret", "the webhook provider needs a secret");
                }
            }
            SmsProvider::Twilio => {
                for (key, value) in [
                    ("twilio_account_sid", &sms.twilio_account_sid),
                    ("twilio_auth_token", &sms.twilio_auth_token),
                    ("twilio_from", &sms.twilio_from),
                ] {
                    if value.as_deref().is_none_or(str::is_empty) {
                        return err(key, "the twilio provider needs it");
                    }
                }
                if !is_http(&sms.twilio_api_base) {
                    return err("twilio_api_base", "must be an http:// or https:// URL");
                }
            }
        }
        if !(1_000..=24 * 3600 * 1000).contains(&sms.code_lifetime_ms) {
            return err(
                "code_lifetime_ms",
                "must be between 1000 (1 s) and 86400000 (24 h)",
            );
        }
        if sms.resend_interval_ms > sms.code_lifetime_ms {
            return err("resend_interval_ms", "must not exceed code_lifetime_ms");
        }
        if sms.max_attempts == 0 {
            return err("max_attempts", "must be at least 1");
        }
        if sms.send_timeout_ms < 100 {
            return err("send_timeout_ms", "must be at least 100");
        }
        for (key, limit) in [
            ("rate_limit_per_number", sms.rate_limit_per_number),
            ("rate_limit_per_ip", sms.rate_limit_per_ip),
        ] {
            if !(limit.per_second.is_finite() && limit.per_second > 0.0) || limit.burst == 0 {
                return err(key, "needs a positive per_second and a burst of at least 1");
            }
        }
        Ok(())
    }

    /// The base URL clients are told to use.
    pub fn client_base_url(&self) -> String {
        if let Some(url) = self
            .well_known
            .client
            .as_ref()
            .or(self.public_baseurl.as_ref())
        {
            return url.trim_end_matches('/').to_owned();
        }
        format!("http://{}", self.listen[0])
    }
}

/// Figment's errors name the key and the source (file or env var); keep that.
fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("`{}`: ", e.path.join("."))
            };
            let source = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref().map(|s| format!(" (from {s})")))
                .unwrap_or_default();
            format!("{key}{}{source}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_open_on_loopback() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.server_name.as_str(), "localhost");
        assert!(c.registration.enabled && !c.registration.tokens_required);
    }

    #[test]
    fn the_example_config_loads_and_matches_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let example = Config::load(Some(&path)).unwrap();
        let defaults = Config::default();
        assert_eq!(
            example.media.thumbnail_sizes,
            defaults.media.thumbnail_sizes
        );
        assert_eq!(
            example.media.url_preview.ip_range_denylist,
            defaults.media.url_preview.ip_range_denylist
        );
        assert_eq!(
            example.media.max_upload_size,
            defaults.media.max_upload_size
        );
        assert_eq!(
            example.push.max_notification_age_ms,
            defaults.push.max_notification_age_ms
        );
        assert_eq!(example.outbox.retry_max_ms, defaults.outbox.retry_max_ms);
        assert_eq!(example.sms.provider, defaults.sms.provider);
        assert_eq!(
            example.sms.rate_limit_per_number,
            defaults.sms.rate_limit_per_number
        );
        assert_eq!(example.sms.code_lifetime_ms, defaults.sms.code_lifetime_ms);
        assert_eq!(example.ai, defaults.ai);
    }

    #[test]
    fn sms_providers_need_their_settings() {
        let mut c = Config::default();
        c.sms.provider = SmsProvider::Webhook;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("sms.webhook_url"), "{e}");
        c.sms.webhook_url = Some("https://sms.example/send".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("sms.webhook_secret"), "{e}");
        c.sms.webhook_secret = Some("s".into());
        c.validate().unwrap();
        c.sms.provider = SmsProvider::Twilio;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("sms.twilio_account_sid"), "{e}");
        c.sms.provider = SmsProvider::Log;
        c.sms.resend_interval_ms = c.sms.code_lifetime_ms + 1;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("sms.resend_interval_ms"), "{e}");
    }

    #[test]
    fn open_registration_on_public_listener_is_refused() {
        let mut c = Config {
            listen: vec!["0.0.0.0:8008".parse().unwrap()],
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("registration.open_on_public_listener"), "{e}");
        c.registration.tokens_required = true;
        c.validate().unwrap();
        c.registration.tokens_required = false;
        c.registration.open_on_public_listener = true;
        c.validate().unwrap();
    }

    #[test]
    fn file_and_env_override_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bigd.toml");
        std::fs::write(
            &path,
            "server_name = \"example.org:8448\"\n[registration]\nenabled = false\n",
        )
        .unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.server_name.as_str(), "example.org:8448");
        assert!(!c.registration.enabled);

        std::fs::write(&path, "[registration]\nenabled = \"maybe\"\n").unwrap();
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("registration.enabled"), "{e}");

        std::fs::write(&path, "server_name = \"bad name!\"\n").unwrap();
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("server_name"), "{e}");

        std::fs::write(&path, "listen_typo = 1\n").unwrap();
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("listen_typo"), "{e}");
    }
}
