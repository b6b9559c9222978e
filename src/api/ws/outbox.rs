//! Frames on their way to one socket.
//!
//! A frame is written by the task that made it when nothing is waiting ahead
//! of it and the socket takes it without waiting: the common case, a sync
//! frame to a client that reads. That spares every frame a hand-over to
//! another task, which in a group is paid once per member per message.
//! Otherwise the frame joins a bounded queue that the socket's writer task
//! drains in order. A client too slow to keep that queue under its bound is
//! cut off, so it never holds others up and the server never buffers more
//! than the bound for it.
//!
//! Order: a frame is written directly only while `backlog` is zero, checked
//! under the sink's lock. `backlog` counts the queued frames not yet sent and
//! a directly written frame the socket has not fully taken, so every frame
//! made earlier is out before a direct write, and the writer keeps the
//! queue's order.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, stream::SplitSink};
use tokio::sync::{Mutex, Notify, mpsc, watch};

type Sink = SplitSink<WebSocket, Message>;

/// How long a cut-off client has to read its close frame before the TCP
/// connection is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// Close code for a policy violation (bad auth, too slow).
pub const CLOSE_POLICY: u16 = 1008;

/// What the producers and the writer task share.
struct Shared {
    sink: Mutex<Sink>,
    /// Queued frames not sent yet, plus one written directly that the socket
    /// has not fully taken (the writer finishes it).
    backlog: AtomicUsize,
    /// Asks the writer to finish a direct write the socket did not take whole.
    flush: Notify,
    /// Set once, with the close reason, to cut the client off.
    kill: watch::Sender<Option<String>>,
}

/// The sending side of one socket; clones share it.
#[derive(Clone)]
pub struct Outbox {
    queue: mpsc::Sender<Message>,
    shared: Arc<Shared>,
}

impl Outbox {
    /// An outbox over `sink`, and its writer task. The writer ends after a
    /// close frame, when the client is cut off, when the socket fails, or
    /// when every clone of the outbox is gone.
    pub fn start(sink: Sink, bound: usize) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, queued) = mpsc::channel(bound);
        let shared = Arc::new(Shared {
            sink: Mutex::new(sink),
            backlog: AtomicUsize::new(0),
            flush: Notify::new(),
            kill: watch::channel(None).0,
        });
        let writer = tokio::spawn(write_queued(shared.clone(), queued));
        (Self { queue, shared }, writer)
    }

    pub fn send(&self, frame: serde_json::Value) {
        self.send_text(frame.to_string());
    }

    /// Sends a text frame: at once when possible, else after what is queued.
    pub fn send_text(&self, frame: String) {
        self.send_message(Message::Text(frame.into()));
    }

    /// Sends a frame: at once when possible, else after what is queued. A
    /// client too slow to keep its queue below the bound is disconnected
    /// rather than buffered without limit or allowed to slow others.
    pub fn send_message(&self, message: Message) {
        if let Some(message) = self.write_now(message)
            && let Err(mpsc::error::TrySendError::Full(_)) = self.enqueue(message)
        {
            tracing::info!("closing a WebSocket whose client does not read");
            self.kill("Too slow: frames were not read");
        }
    }

    /// Queues a close frame: the writer sends it after what is queued, then
    /// stops. A full queue drops it (the connection is ending either way).
    pub fn close(&self, code: u16, reason: &str) {
        let _ = self.enqueue(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })));
    }

    /// Cuts the client off with `reason` (its close frame, if it still reads).
    pub fn kill(&self, reason: &str) {
        self.shared.kill.send_replace(Some(reason.to_owned()));
    }

    pub fn is_killed(&self) -> bool {
        self.shared.kill.borrow().is_some()
    }

    pub fn is_closed(&self) -> bool {
        self.queue.is_closed() || self.is_killed()
    }

    /// Queues a frame behind the others, counted in the backlog until sent.
    fn enqueue(&self, message: Message) -> Result<(), mpsc::error::TrySendError<Message>> {
        self.shared.backlog.fetch_add(1, Ordering::AcqRel);
        self.queue.try_send(message).inspect_err(|_| {
            self.shared.backlog.fetch_sub(1, Ordering::AcqRel);
        })
    }

    /// Writes `message` if nothing waits ahead of it and nobody else is
    /// writing; gives it back otherwise. A frame the socket does not take
    /// whole is left to the writer to finish, and counts in the backlog
    /// until then, so later frames queue behind it.
    fn write_now(&self, message: Message) -> Option<Message> {
        let shared = &self.shared;
        if shared.backlog.load(Ordering::Acquire) != 0 {
            return Some(message);
        }
        let Ok(mut sink) = shared.sink.try_lock() else {
            return Some(message);
        };
        if shared.backlog.load(Ordering::Acquire) != 0 || self.is_closed() {
            return Some(message);
        }
        // Polled once, without waiting: nothing is woken when a poll is
        // pending, so the writer (which does wait) takes over from there.
        let mut cx = Context::from_waker(Waker::noop());
        match sink.poll_ready_unpin(&mut cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return self.failed(),
            Poll::Pending => return Some(message),
        }
        if sink.start_send_unpin(message).is_err() {
            return self.failed();
        }
        match sink.poll_flush_unpin(&mut cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return self.failed(),
            Poll::Pending => {
                shared.backlog.fetch_add(1, Ordering::AcqRel);
                shared.flush.notify_one();
            }
        }
        None
    }

    /// The socket failed under a direct write: the connection ends as it
    /// does when the writer's send fails.
    fn failed(&self) -> Option<Message> {
        self.kill("The connection failed");
        None
    }
}

/// The writer task: sends queued frames in order and finishes direct writes
/// the socket did not take whole. When the client is cut off it abandons
/// whatever send is stuck and tries, briefly, to say why.
async fn write_queued(shared: Arc<Shared>, mut queued: mpsc::Receiver<Message>) {
    let mut killed = shared.kill.subscribe();
    loop {
        tokio::select! {
            message = queued.recv() => {
                let Some(message) = message else { break };
                let closing = matches!(message, Message::Close(_));
                let mut sink = shared.sink.lock().await;
                let sent = tokio::select! {
                    sent = sink.send(message) => sent.is_ok(),
                    _ = killed.changed() => break,
                };
                shared.backlog.fetch_sub(1, Ordering::AcqRel);
                if !sent || closing {
                    break;
                }
            }
            () = shared.flush.notified() => {
                let mut sink = shared.sink.lock().await;
                let flushed = tokio::select! {
                    flushed = sink.flush() => flushed.is_ok(),
                    _ = killed.changed() => break,
                };
                shared.backlog.fetch_sub(1, Ordering::AcqRel);
                if !flushed {
                    break;
                }
            }
            _ = killed.changed() => break,
        }
    }
    // Nothing more may be written directly once the writer is gone.
    let reason = killed.borrow().clone();
    shared.backlog.fetch_add(1, Ordering::AcqRel);
    let mut sink = shared.sink.lock().await;
    if let Some(reason) = reason {
        let close = Message::Close(Some(CloseFrame {
            code: CLOSE_POLICY,
            reason: reason.into(),
        }));
        // What was queued is dropped; the close frame goes out after the bytes
        // already in flight, if the client reads again within the grace period.
        let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(close)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}
