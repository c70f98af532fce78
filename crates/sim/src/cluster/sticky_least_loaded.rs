//! `sticky_least_loaded`: a session stays on the replica it was first given; a new session
//! goes to the replica with the fewest active sessions, ties broken by rendezvous hashing
//! (highest `fbi_hash("{session}:{url}")`, the first replica on equal weights). Sessions
//! expire after 7200 s without a request, swept at most every 60 s (vllm-router
//! `src/policies/sticky_least_loaded.rs`; `finish_session` is never called by a replayed
//! trace). A request without a session goes to the replica with the fewest active sessions
//! (tie-break key: its id; the router's is the request text) and is not recorded.

use std::collections::HashMap;

use super::fbi_hash::fbi_hash;
use super::router::{Fleet, RouteRequest, Router};

/// `DEFAULT_SESSION_EXPIRATION_SECS`.
pub const SESSION_EXPIRATION_S: f64 = 7200.0;
/// `SWEEP_INTERVAL_SECS`.
pub const SWEEP_INTERVAL_S: f64 = 60.0;

#[derive(Default)]
pub struct StickyLeastLoaded {
    /// session -> (replica, last request time)
    sessions: HashMap<String, (usize, f64)>,
    active: Vec<usize>,
    last_sweep: Option<f64>,
}

impl StickyLeastLoaded {
    fn least_loaded(&self, fleet: &dyn Fleet, key: &str) -> usize {
        let min = (0..fleet.replicas())
            .map(|k| self.active[k])
            .min()
            .unwrap_or(0);
        let mut best: Option<(usize, u64)> = None;
        for k in (0..fleet.replicas()).filter(|&k| self.active[k] == min) {
            let w = fbi_hash(&format!("{key}:{}", fleet.worker_url(k)));
            match best {
                Some((_, bw)) if bw >= w => {}
                _ => best = Some((k, w)),
            }
        }
        best.map_or(0, |b| b.0)
    }

    fn sweep(&mut self, now: f64) {
        let last = *self.last_sweep.get_or_insert(now);
        if now - last < SWEEP_INTERVAL_S {
            return;
        }
        let active = &mut self.active;
        self.sessions.retain(|_, (k, t)| {
            let keep = now - *t < SESSION_EXPIRATION_S;
            if !keep {
                active[*k] = active[*k].saturating_sub(1);
            }
            keep
        });
        self.last_sweep = Some(now);
    }
}

impl Router for StickyLeastLoaded {
    fn route(&mut self, req: &RouteRequest<'_>, fleet: &dyn Fleet) -> usize {
        self.active.resize(fleet.replicas(), 0);
        self.sweep(req.time);
        let Some(session) = &req.session else {
            return self.least_loaded(fleet, req.id);
        };
        if let Some((k, t)) = self.sessions.get_mut(session) {
            *t = req.time;
            return *k;
        }
        let k = self.least_loaded(fleet, session);
        self.sessions.insert(session.clone(), (k, req.time));
        self.active[k] += 1;
        k
    }
}
