//! bigd: the homeserver of BIG Messenger.
//!
//! `Server::start(config)` opens the data folder, builds the services and serves
//! the HTTP API on every configured listener; tests start it in-process.

pub mod ai;
pub mod api;
pub mod auth;
pub mod config;
pub mod contacts;
pub mod e2ee;
pub mod ephemeral;
pub mod error;
pub mod federation;
pub mod media;
pub mod messenger;
pub mod outbox;
pub mod push;
pub mod rooms;
pub mod storage;
pub mod sync;
pub mod users;
pub mod util;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::{
    auth::Auth,
    config::Config,
    error::{Error, Result},
    storage::Engine,
    users::Users,
};

/// Every service, built once at start and shared as the router's state.
#[derive(Debug)]
pub struct Services {
    pub config: Arc<Config>,
    pub db: Engine,
    pub users: Users,
    pub auth: Auth,
    pub rooms: rooms::Rooms,
    pub signing_key: Arc<federation::keys::SigningKey>,
    pub to_device: ephemeral::to_device::ToDevice,
    pub e2ee: e2ee::E2ee,
    pub typing: Arc<ephemeral::typing::Typing>,
    pub receipts: ephemeral::receipts::Receipts,
    pub presence: Arc<ephemeral::presence::Presence>,
    pub notifications: push::Notifications,
    pub push: Arc<push::Push>,
    pub outbox: Arc<outbox::Outbox>,
    pub media: Arc<media::Media>,
    pub contacts: contacts::Contacts,
    pub delivered: ephemeral::delivered::Delivered,
    pub messenger: messenger::Messenger,
    /// The router, for requests that arrive as WebSocket frames. Set while
    /// serving; cleared at shutdown (the router holds the services).
    pub dispatcher: parking_lot::Mutex<Option<axum::Router>>,
    /// Set when the server stops, so long-polls answer at once.
    pub stopping: watch::Sender<bool>,
}

impl Services {
    /// Opens the data folder and builds the services (no network).
    pub fn open(config: Config) -> Result<Arc<Self>> {
        config
            .validate()
            .map_err(|e| Error::internal(e.to_string()))?;
        let config = Arc::new(config);
        let db = Engine::open(&config.data_dir.join("db"))?;
        let users = Users::new(db.clone(), config.server_name.clone());
        let contacts = contacts::Contacts::new(db.clone(), users.clone())?;
        let auth = Auth::new(config.clone(), users.clone(), contacts.clone())?;
        let signing_key = Arc::new(federation::keys::SigningKey::load_or_create(
            &config.data_dir.join("keys"),
            &config.server_name,
        )?);
        let outbox = outbox::Outbox::new(db.clone(), config.outbox.clone());
        let media = media::Media::open(
            db.clone(),
            &config.data_dir,
            config.server_name.clone(),
            config.media.clone(),
        )?;
        let push = Arc::new(push::Push::new(
            db.clone(),
            users.clone(),
            outbox.clone(),
            config.push.enabled,
        ));
        let rooms = rooms::Rooms::new(
            db.clone(),
            config.server_name.clone(),
            signing_key.clone(),
            push.clone(),
        );
        let (stopping, _) = watch::channel(false);
        let to_device = ephemeral::to_device::ToDevice::new(db.clone(), users.clone());
        let e2ee = e2ee::E2ee::new(db.clone(), users.clone());
        let typing = ephemeral::typing::Typing::new(db.clone());
        let receipts = ephemeral::receipts::Receipts::new(db.clone());
        let presence = ephemeral::presence::Presence::new(db.clone(), config.presence.clone())?;
        let delivered = ephemeral::delivered::Delivered::new(config.messenger.delivered_receipts);
        let messenger = messenger::Messenger::new(config.messenger.clone());
        let db_for_push = db.clone();
        Ok(Arc::new(Self {
            config,
            db,
            users,
            auth,
            rooms,
            signing_key,
            to_device,
            e2ee,
            typing,
            receipts,
            presence,
            notifications: push::Notifications::new(db_for_push, push.clone()),
            push,
            outbox,
            media,
            contacts,
            delivered,
            messenger,
            dispatcher: parking_lot::Mutex::new(None),
            stopping,
        }))
    }
}

impl Services {
    /// Starts what works in the background while serving: outbox delivery,
    /// and hourly the pruning of old notifications and media retention.
    fn start_background(self: &Arc<Self>) -> Result<()> {
        self.delivered.start_writer(Arc::downgrade(self));
        self.push.start_log_writer()?;
        let gateway = Arc::new(push::gateway::Gateway::new(self)?);
        self.outbox.start(outbox::Kind::Pusher, gateway)?;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let hour = Duration::from_secs(3600);
            let first = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut every = tokio::time::interval_at(first, hour);
            loop {
                every.tick().await;
                let Some(s) = weak.upgrade() else { return };
                if *s.stopping.borrow() {
                    return;
                }
                let media = s.media.clone();
                match tokio::task::spawn_blocking(move || media.sweep()).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!(deleted = n, "media retention applied"),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot apply media retention"),
                    Err(e) => tracing::warn!(error = %e, "media retention failed"),
                }
                let retention = s.config.push.notification_retention_ms;
                match tokio::task::spawn_blocking(move || s.push.prune_log(retention)).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!(pruned = n, "old notifications pruned"),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune old notifications"),
                    Err(e) => tracing::warn!(error = %e, "notification pruning failed"),
                }
            }
        });
        Ok(())
    }
}

/// A running server.
pub struct Server {
    pub services: Arc<Services>,
    addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<std::io::Result<()>>,
}

impl Server {
    /// Binds every listener and starts serving.
    pub async fn start(mut config: Config) -> Result<Self> {
        util::install_tls_provider();
        config
            .validate()
            .map_err(|e| Error::internal(e.to_string()))?;
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| Error::internal(format!("cannot listen on {addr}: {e}")))?;
            let local = listener
                .local_addr()
                .map_err(|e| Error::internal(e.to_string()))?;
            listeners.push((listener, local));
        }
        // Without a configured public URL, clients are pointed at the first
        // listener as bound (its real port, when the config asked for port 0).
        if config.public_baseurl.is_none() {
            config.public_baseurl = Some(format!("http://{}", listeners[0].1));
        }
        let services = Services::open(config)?;
        if services.presence.enabled() {
            services.presence.spawn_sweeper();
        }
        services.start_background()?;
        ai::start(&services).await?;
        let app = api::router(services.clone());
        *services.dispatcher.lock() = Some(app.clone());
        let (shutdown, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut addrs = Vec::new();
        for (listener, local) in listeners {
            addrs.push(local);
            let app = app
                .clone()
                .into_make_service_with_connect_info::<SocketAddr>();
            let mut stop = shutdown.subscribe();
            // Small frames and responses go out at once rather than waiting
            // for the peer's delayed ACK (Nagle), which costs WebSockets tens of ms.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
            });
            tasks.spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    })
                    .await
            });
            tracing::info!(%local, server_name = %services.config.server_name, "listening");
        }
        Ok(Self {
            services,
            addrs,
            shutdown,
            tasks,
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// `http://` URL of the first listener.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addrs[0])
    }

    /// Runs until a listener fails or `shutdown` is called from elsewhere.
    pub async fn wait(&mut self) -> Result<()> {
        while let Some(result) = self.tasks.join_next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Error::internal(format!("listener failed: {e}"))),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Stops accepting, lets requests in flight finish (bounded), flushes storage.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.shutdown.send(true);
        // Long-polls waiting for news answer now instead of holding the shutdown.
        self.services.stopping.send_replace(true);
        self.services.dispatcher.lock().take();
        self.services.outbox.stop().await;
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("requests still running after 10 s; closing them");
            self.tasks.shutdown().await;
        }
        self.services.db.flush()?;
        tracing::info!("stopped");
        Ok(())
    }
}
