//! What the predicted-next-use policies (`conversation_aware`, `lightgbm`) share: the online
//! statistics of the reference stream (`features`), the eviction order by predicted next use
//! (`order`) and LightGBM's text model format (`gbdt`).

pub mod chunked;
pub mod features;
pub mod gbdt;
pub mod heap;
pub mod horizon;
pub mod order;
pub mod shadow;

/// The `EvictionPolicy` of a policy that predicts each touched block's next use: a type with
/// `fn touch(&mut self, EntryId, &Access)` (observe, predict, order), `fn revised_next_use(&mut
/// self, EntryId) -> Option<f64>` (a prediction revised since the touch, taken at the unpin),
/// `fn finished(&mut self, request: u32, output_tokens: u32)` (a request finished), a
/// `stats: Tracker` and an `order: NextUseOrder`. Pins leave the order; unpins happen at the finish time of their request
/// (`on_time`), evictions at the latest trace time seen.
macro_rules! predicted_next_use_policy {
    ($policy:ty) => {
        impl $crate::policy::api::EvictionPolicy for $policy {
            #[inline]
            fn on_insert(
                &mut self,
                e: $crate::policy::api::EntryId,
                a: &$crate::policy::api::Access,
            ) {
                self.order.referenced(Some(e), a);
                self.touch(e, a);
            }

            #[inline]
            fn on_hit(&mut self, e: $crate::policy::api::EntryId, a: &$crate::policy::api::Access) {
                self.order.referenced(Some(e), a);
                self.touch(e, a);
            }

            #[inline]
            fn on_miss(&mut self, a: &$crate::policy::api::Access) {
                self.order.referenced(None, a);
                // the eviction this miss may cause happens at the miss's trace time
                if a.timestamp > self.stats.now {
                    self.stats.now = a.timestamp;
                }
            }

            #[inline]
            fn on_time(&mut self, timestamp: f64) {
                // a request finished: its blocks' unpins come next, at this time
                if timestamp > self.stats.now {
                    self.stats.now = timestamp;
                }
            }

            #[inline]
            fn on_finish(&mut self, request: u32, output_tokens: u32) {
                self.finished(request, output_tokens);
            }

            fn uses_waiting_queue(&self) -> bool {
                self.waiting_queue
            }

            #[inline]
            fn on_wanted(&mut self, e: $crate::policy::api::EntryId, rank: Option<u64>) {
                self.order.set_wanted(e, rank);
            }

            fn judge(&self) -> Option<$crate::policy::api::JudgeCounts> {
                self.order.shadows.as_ref().map(|sh| sh.counts())
            }

            #[inline]
            fn on_pin(&mut self, e: $crate::policy::api::EntryId) {
                self.order.pin(e);
            }

            #[inline]
            fn on_unpin(&mut self, e: $crate::policy::api::EntryId, _now: u64) {
                let next_use = self.revised_next_use(e);
                self.order.unpin_rekeyed(e, self.stats.now, next_use);
            }

            #[inline]
            fn evict(
                &mut self,
                pins: $crate::policy::api::Pins<'_>,
            ) -> Option<$crate::policy::api::EntryId> {
                self.order.evict(pins, self.stats.now)
            }

            fn on_remove(&mut self, e: $crate::policy::api::EntryId) {
                self.order.remove(e);
            }

            fn validate(
                &self,
                live: &dyn Fn($crate::policy::api::EntryId) -> bool,
            ) -> Result<(), String> {
                self.order.validate(live)
            }
        }
    };
}
pub(crate) use predicted_next_use_policy;
