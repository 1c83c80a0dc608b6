//! Wake-ups for drivers that do not block: whoever waits for a claim to be released or for a
//! media-change probe registers a [`Wake`]; the engine calls every registered one each time a
//! claim is released and each time a probe finishes. The ublk queues register one per queue (an
//! eventfd read on the queue's io_uring), so a waiting request is stepped again when something
//! changed, never by polling.
//!
//! Must never call a waker under the engine's state lock (a waker may take its own locks).

use std::sync::{Arc, PoisonError, RwLock, Weak};

/// Told when something a waiting request may be waiting for happened. Cheap and non-blocking:
/// it is called on the thread that released a claim or finished a probe.
pub trait Wake: Send + Sync {
    /// Something happened: waiting requests should check again.
    fn wake(&self);
}

/// The registered wakers.
#[derive(Default)]
pub(super) struct Wakers {
    list: RwLock<Vec<Arc<dyn Wake>>>,
}

impl std::fmt::Debug for Wakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakers").finish_non_exhaustive()
    }
}

impl Wakers {
    /// Calls every registered waker.
    pub(super) fn wake_all(&self) {
        let list = self.list.read().unwrap_or_else(PoisonError::into_inner);
        for w in list.iter() {
            w.wake();
        }
    }

    pub(super) fn add(self: &Arc<Self>, w: Arc<dyn Wake>) -> WakerGuard {
        self.list
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(w.clone());
        WakerGuard {
            wakers: Arc::downgrade(self),
            waker: w,
        }
    }
}

/// Keeps a waker registered; dropping it unregisters the waker.
pub struct WakerGuard {
    wakers: Weak<Wakers>,
    waker: Arc<dyn Wake>,
}

impl std::fmt::Debug for WakerGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakerGuard").finish_non_exhaustive()
    }
}

impl Drop for WakerGuard {
    fn drop(&mut self) {
        if let Some(wakers) = self.wakers.upgrade() {
            wakers
                .list
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|w| !Arc::ptr_eq(w, &self.waker));
        }
    }
}
