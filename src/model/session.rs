//! ONNX Runtime sessions: opening one for a device, and the pool the scoring workers share.

use std::sync::{Condvar, Mutex};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use super::ModelError;
use super::device::ExecutionDevice;
use super::runtime::{init_runtime, readable_ort_message};

pub(super) fn new_session_on(
    uri: &str,
    bytes: &[u8],
    intra_op_threads: usize,
    device: ExecutionDevice,
    memory_pattern: bool,
) -> Result<Session, ModelError> {
    let env = init_runtime(None)?;
    let err = |e: ort::Error<_>| ModelError::Session {
        uri: uri.to_string(),
        message: e.to_string(),
    };
    // One intra-op thread per session by default: parallelism comes from one session per
    // worker, each scoring its own partition, which keeps every core busy without
    // oversubscription. `batchscore bench` measures the alternatives.
    Session::builder(env)
        .map_err(|e| ModelError::Session {
            uri: uri.to_string(),
            message: e.to_string(),
        })?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(err)?
        .with_intra_threads(intra_op_threads.max(1))
        .map_err(err)?
        .with_inter_threads(1)
        .map_err(err)?
        .with_memory_pattern(memory_pattern)
        .map_err(err)?
        .with_execution_providers(device.providers())
        .map_err(err)?
        .commit_from_memory(bytes)
        .map_err(|e| ModelError::Session {
            uri: uri.to_string(),
            message: readable_ort_message(&e.to_string()),
        })
}

/// Sessions shared by the scoring workers; `ort` sessions run with `&mut self`, so each worker
/// borrows one for the length of a batch.
pub struct SessionPool {
    sessions: Mutex<Vec<Session>>,
    available: Condvar,
}

impl SessionPool {
    pub(super) fn new(sessions: Vec<Session>) -> Self {
        Self {
            sessions: Mutex::new(sessions),
            available: Condvar::new(),
        }
    }

    pub fn with_session<T>(&self, f: impl FnOnce(&mut Session) -> T) -> T {
        let mut session = {
            let mut guard = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(s) = guard.pop() {
                    break s;
                }
                guard = self
                    .available
                    .wait(guard)
                    .unwrap_or_else(|e| e.into_inner());
            }
        };
        // Put the session back even if `f` panics, so other workers never wait forever.
        struct Return<'a> {
            pool: &'a SessionPool,
            session: Option<Session>,
        }
        impl Drop for Return<'_> {
            fn drop(&mut self) {
                if let Some(s) = self.session.take() {
                    self.pool
                        .sessions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(s);
                    self.pool.available.notify_one();
                }
            }
        }
        let mut guard = Return {
            pool: self,
            session: None,
        };
        let out = f(&mut session);
        guard.session = Some(session);
        out
    }
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionPool")
    }
}
