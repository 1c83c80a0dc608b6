//! Waking a queue's waiting requests without polling.
//!
//! Each queue registers one [`Wake`] with the engine: an eventfd, written only while some
//! request of the queue is waiting (the `armed` flag), so hits-only traffic never wakes anyone.
//! One task per queue keeps an io_uring `Read` of the eventfd in flight on the queue's ring and,
//! when it completes, notifies the queue-local [`Event`] every waiting request listens on.
//!
//! No lost wake-up: a request creates its listener and arms the flag *before* it checks the
//! engine again (`Engine::wait_over`, `Engine::probe_ready`); the engine changes its state
//! before calling the waker, which writes the eventfd if armed. Must never block the queue
//! thread (the eventfd write happens on the thread that released a claim).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use event_listener::{Event, EventListener};
use io_uring::{opcode, types};
use libublk::uring_async::ublk_submit_sqe_async;
use libublk::UblkUringData;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::engine::{Engine, Wake, WakerGuard};

/// The engine's side: an eventfd written when armed.
struct QueueWake {
    efd: EventFd,
    armed: AtomicBool,
}

impl Wake for QueueWake {
    fn wake(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            // A full counter (never, at one write per arming) would only mean already woken.
            let _ = self.efd.write(1);
        }
    }
}

/// The queue's side: what waiting requests listen on.
pub(super) struct QueueWaiters {
    wake: Arc<QueueWake>,
    event: Event,
    _registered: WakerGuard,
}

impl QueueWaiters {
    /// Registers a waker for this queue with `engine`.
    pub(super) fn new(engine: &Engine) -> std::io::Result<QueueWaiters> {
        // Blocking: io_uring then waits for it to become readable (O_NONBLOCK would make the
        // Read complete at once with EAGAIN).
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?;
        let wake = Arc::new(QueueWake {
            efd,
            armed: AtomicBool::new(false),
        });
        let registered = engine.add_waker(wake.clone());
        Ok(QueueWaiters {
            wake,
            event: Event::new(),
            _registered: registered,
        })
    }

    /// A listener for the next wake-up, with the engine's waker armed. Check the engine's state
    /// after this and before awaiting the listener.
    pub(super) fn listen(&self) -> EventListener {
        let listener = self.event.listen();
        self.wake.armed.store(true, Ordering::SeqCst);
        listener
    }

    /// The queue's eventfd reader: runs until the queue's ring goes away.
    pub(super) async fn run(&self) {
        let mut value = [0u8; 8];
        loop {
            let sqe = opcode::Read::new(
                types::Fd(self.wake.efd.as_raw_fd()),
                value.as_mut_ptr(),
                value.len() as u32,
            )
            .build();
            // `value` lives in this future's frame until the completion.
            match ublk_submit_sqe_async(sqe, UblkUringData::Target as u64).await {
                Ok(n) if n >= 0 || n == -libc::EINTR => {}
                other => {
                    tracing::error!(result = ?other, "reading the queue's wake-up eventfd failed");
                    return;
                }
            }
            self.event.notify(usize::MAX);
        }
    }
}
