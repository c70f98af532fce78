//! What the predicted-next-use policies (`conversation_aware`, `lightgbm`) share: the online
//! statistics of the reference stream (`features`), the eviction order by predicted next use
//! (`order`) and LightGBM's text model format (`gbdt`).

pub mod features;
pub mod gbdt;
pub mod order;
