//! The media-change watcher: the only thread that asks the drive whether its disc changed.
//!
//! Asking (`Media::media_changed`: BLKGETSIZE64, BLKGETDISKSEQ, CDROM_MEDIA_CHANGED, which sends
//! the drive a TEST UNIT READY and waits behind whatever command it is busy with) can take as
//! long as the drive does. So no thread that serves reads asks: this one does, on request.
//!
//! Protocol (what closes the swap window): when a media read finished, its driver takes a
//! *ticket* ([`Watch::ticket`]). The watcher serves tickets in rounds: a round notes the newest
//! ticket taken, *then* probes; when the probe returns, every ticket up to the noted one has its
//! verdict. So a ticket's verdict always comes from a probe that started after the read had
//! completed: a disc swapped before the read returned its bytes (or its EIO) is seen. The fetch
//! is landed (written, marked) only once its verdict says "unchanged"; a ticket taken while a
//! probe runs waits for the next round (reads finishing together share one probe). A change is
//! latched: every later verdict is "changed" at once, without asking the drive.
//!
//! Waiting for a verdict never blocks a queue thread: async drivers poll [`Watch::verdict`] and
//! are woken through the engine's wakers when a round ends; the synchronous `Engine::read` blocks
//! in [`Watch::wait`]. Media that cannot change (regular files) have no watcher thread: every
//! verdict is "unchanged" at once.
//!
//! The thread is detached, not joined, when the engine is dropped: it may be inside a probe that
//! waits on a stuck drive; it ends after that probe.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use nix::sys::signal::{SigSet, SigmaskHow};

use super::wake::Wakers;
use crate::media::Media;

/// The watcher of one engine's media.
#[derive(Debug)]
pub(super) struct Watch {
    /// `None` when the media cannot change.
    shared: Option<Arc<Shared>>,
}

struct Shared {
    state: Mutex<Rounds>,
    /// Signalled when a ticket is taken (the thread) and when a round ends (sync waiters).
    cv: Condvar,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Rounds {
    /// The newest ticket taken.
    taken: u64,
    /// Every ticket up to this one has its verdict.
    judged: u64,
    /// A probe saw a change (latched).
    changed: bool,
    /// The engine is gone: the thread ends.
    stop: bool,
}

fn lock(m: &Mutex<Rounds>) -> MutexGuard<'_, Rounds> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Watch {
    /// Starts the watcher thread if `media` can change.
    pub(super) fn start(media: &Arc<dyn Media>, wakers: &Arc<Wakers>) -> std::io::Result<Watch> {
        if !media.can_change() {
            return Ok(Watch { shared: None });
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(Rounds::default()),
            cv: Condvar::new(),
        });
        let (thread_shared, media, wakers) = (shared.clone(), media.clone(), wakers.clone());
        spawn_quiet("blkcache-watch", move || {
            run(&thread_shared, media.as_ref(), &wakers);
        })?;
        Ok(Watch {
            shared: Some(shared),
        })
    }

    /// Asks for a probe that starts after now; its verdict answers for reads finished before.
    pub(super) fn ticket(&self) -> u64 {
        let Some(shared) = &self.shared else {
            return 0;
        };
        let mut r = lock(&shared.state);
        if r.changed {
            return r.taken;
        }
        r.taken += 1;
        let t = r.taken;
        drop(r);
        shared.cv.notify_all();
        t
    }

    /// The verdict for `ticket`: `None` while its probe has not finished, else whether the
    /// medium changed.
    pub(super) fn verdict(&self, ticket: u64) -> Option<bool> {
        let Some(shared) = &self.shared else {
            return Some(false);
        };
        let r = lock(&shared.state);
        if r.changed {
            Some(true)
        } else if r.judged >= ticket {
            Some(false)
        } else {
            None
        }
    }

    /// Blocks until `ticket` has its verdict; returns it.
    pub(super) fn wait(&self, ticket: u64) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let mut r = lock(&shared.state);
        while !r.changed && r.judged < ticket {
            r = shared.cv.wait(r).unwrap_or_else(PoisonError::into_inner);
        }
        r.changed
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            lock(&shared.state).stop = true;
            shared.cv.notify_all();
        }
    }
}

/// Starts a thread of the engine with every signal blocked (the mask is inherited): a signal the
/// process means to handle on its own thread (the daemon's SIGTERM) must never land on it and
/// take its default action.
pub(super) fn spawn_quiet(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let all = SigSet::all();
    let old = all.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
    let spawned = std::thread::Builder::new().name(name.into()).spawn(f);
    old.thread_set_mask()?;
    spawned
}

/// The thread: one probe per round, while tickets are waiting.
fn run(shared: &Shared, media: &dyn Media, wakers: &Wakers) {
    loop {
        let round = {
            let mut r = lock(&shared.state);
            while !r.stop && r.judged == r.taken {
                r = shared.cv.wait(r).unwrap_or_else(PoisonError::into_inner);
            }
            if r.stop {
                return;
            }
            r.taken
        };
        let changed = media.media_changed();
        {
            let mut r = lock(&shared.state);
            r.judged = round;
            r.changed |= changed;
        }
        shared.cv.notify_all();
        wakers.wake_all();
        if changed {
            // Latched: every verdict is "changed" from now on, without a probe.
            return;
        }
    }
}
