//! The eviction policies and their registry: one line per policy in [`registry!`] below makes
//! the policy's module, its variant of [`PolicyConfig`] (what users write in `--eviction-policy`
//! and YAML grids) and of [`AnyPolicy`] (enum dispatch, no virtual call in the hot loop), its
//! name in [`PolicyConfig::NAMES`] and the parser's entry.
//!
//! Adding a policy = one new file here (the type, its `EvictionPolicy` and `Registered` impls)
//! + one line in `registry!` (docs/architecture.md, "Adding a policy").

pub mod api;
pub mod list;
#[cfg(test)]
pub(crate) mod testing;

pub(crate) use api::ensure;
pub use api::{
    Access, EntryId, EvictionPolicy, JudgeCounts, NoParams, ObjId, Pins, Registered, NEVER,
};

/// Normalised spelling of a policy name: lower case, without `-` and `_`.
fn normalise(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace(['-', '_'], "")
}

/// `c` bound in a pattern of a variant with parameters (`registry!`).
macro_rules! bind_params {
    ($c:ident, $params:ident) => {
        $c
    };
}

/// A variant's parameters in `build`: the bound `c`, or `NoParams` for a unit variant.
macro_rules! params_or_none {
    () => {
        &NoParams {}
    };
    ($c:ident, $params:ident) => {
        $c
    };
}

macro_rules! registry {
    ($($variant:ident($name:literal $(, $params:ident)?): $module:ident::$ty:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// The configuration of a policy: what users write in `--eviction-policy` and YAML
        /// grids (`{name: s3fifo, small_ratio: 0.1}`). Parsing (`FromStr`, `Deserialize`) reads
        /// no file: a `lightgbm` config names its model file, which
        /// [`PolicyConfig::load_files`] loads.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "name", deny_unknown_fields)]
        pub enum PolicyConfig {
            $(#[serde(rename = $name)] $variant $(($module::$params))?),*
        }

        /// Enum dispatch over every registered policy.
        #[derive(Debug, Clone)]
        pub enum AnyPolicy { $($variant($module::$ty)),* }

        impl PolicyConfig {
            /// Every policy's canonical name, in registry order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            pub fn name(&self) -> &'static str {
                match self { $(PolicyConfig::$variant { .. } => $name),* }
            }

            /// True for the infinite cache (capacity is ignored).
            pub fn is_unbounded(&self) -> bool {
                match self {
                    $(PolicyConfig::$variant { .. } => <$module::$ty as Registered>::UNBOUNDED),*
                }
            }

            pub fn needs_oracle(&self) -> bool {
                match self {
                    $(PolicyConfig::$variant { .. } => <$module::$ty as Registered>::ORACLE),*
                }
            }

            /// Build the policy for a cache of `capacity` entries.
            pub fn build(&self, capacity: u64) -> AnyPolicy {
                match self {
                    $(PolicyConfig::$variant $((bind_params!(c, $params)))? => AnyPolicy::$variant(
                        <$module::$ty as Registered>::build(params_or_none!($(c, $params)?), capacity),
                    )),*
                }
            }

            /// The policy a bare name means (its default parameters), matching canonical names
            /// and aliases without case, `-` and `_`.
            pub fn from_name(s: &str) -> Option<Self> {
                let s = normalise(s);
                $(
                    if normalise($name) == s
                        || <$module::$ty as Registered>::ALIASES.iter().any(|a| normalise(a) == s)
                    {
                        return Some(PolicyConfig::$variant $((<$module::$params>::default()))?);
                    }
                )*
                None
            }
        }

        impl EvictionPolicy for AnyPolicy {
            #[inline]
            fn needs_oracle(&self) -> bool { match self { $(AnyPolicy::$variant(p) => p.needs_oracle()),* } }
            #[inline]
            fn on_insert(&mut self, e: EntryId, a: &Access) { match self { $(AnyPolicy::$variant(p) => p.on_insert(e, a)),* } }
            #[inline]
            fn on_hit(&mut self, e: EntryId, a: &Access) { match self { $(AnyPolicy::$variant(p) => p.on_hit(e, a)),* } }
            #[inline]
            fn on_miss(&mut self, a: &Access) { match self { $(AnyPolicy::$variant(p) => p.on_miss(a)),* } }
            #[inline]
            fn on_pin(&mut self, e: EntryId) { match self { $(AnyPolicy::$variant(p) => p.on_pin(e)),* } }
            #[inline]
            fn on_unpin(&mut self, e: EntryId, now: u64) { match self { $(AnyPolicy::$variant(p) => p.on_unpin(e, now)),* } }
            #[inline]
            fn on_time(&mut self, t: f64) { match self { $(AnyPolicy::$variant(p) => p.on_time(t)),* } }
            #[inline]
            fn on_finish(&mut self, r: u32, out: u32) { match self { $(AnyPolicy::$variant(p) => p.on_finish(r, out)),* } }
            fn uses_waiting_queue(&self) -> bool { match self { $(AnyPolicy::$variant(p) => p.uses_waiting_queue()),* } }
            #[inline]
            fn on_wanted(&mut self, e: EntryId, rank: Option<u64>) { match self { $(AnyPolicy::$variant(p) => p.on_wanted(e, rank)),* } }
            fn judge(&self) -> Option<JudgeCounts> { match self { $(AnyPolicy::$variant(p) => p.judge()),* } }
            #[inline]
            fn evict(&mut self, pins: Pins<'_>) -> Option<EntryId> { match self { $(AnyPolicy::$variant(p) => p.evict(pins)),* } }
            #[inline]
            fn on_remove(&mut self, e: EntryId) { match self { $(AnyPolicy::$variant(p) => p.on_remove(e)),* } }
            fn validate(&self, live: &dyn Fn(EntryId) -> bool) -> Result<(), String> { match self { $(AnyPolicy::$variant(p) => p.validate(live)),* } }
        }
    };
}

use serde::{Deserialize, Serialize};

// One line per policy: `Variant("name"[, ParamsType]): module::Type` (a policy without
// parameters is a unit variant and its `Registered::Config` is `NoParams`).
registry! {
    Lru("lru"): lru::Lru,
    Fifo("fifo"): fifo::Fifo,
    Lfu("lfu"): lfu::Lfu,
    Mru("mru"): mru::Mru,
    Arc("arc"): arc::Arc,
    S3fifo("s3fifo", S3FifoConfig): s3fifo::S3Fifo,
    Sieve("sieve"): sieve::Sieve,
    Belady("belady"): belady::Belady,
    Ideal("ideal"): ideal::Ideal,
    ConversationAware("conversation_aware", ScorerConfig): conversation_aware::ConversationAware,
    Lightgbm("lightgbm", LightGbmConfig): lightgbm::LightGbm,
}

impl PolicyConfig {
    /// Load the files the configuration names (a `lightgbm` model). Parsing never reads files;
    /// building needs them loaded, so this runs once between the two (`sim::resolve`).
    pub fn load_files(&mut self) -> Result<(), String> {
        match self {
            PolicyConfig::Lightgbm(c) => c.model.ensure_loaded(),
            _ => Ok(()),
        }
    }
}

impl std::str::FromStr for PolicyConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PolicyConfig::from_name(s).ok_or_else(|| {
            format!(
                "unknown eviction policy '{}'; expected one of: {}",
                s.trim(),
                Self::NAMES.join(", ")
            )
        })
    }
}

impl std::fmt::Display for PolicyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_to_itself_and_serializes_as_its_tag() {
        for name in PolicyConfig::NAMES {
            let p: PolicyConfig = name.parse().unwrap();
            assert_eq!(p.name(), *name);
            let v = serde_json::to_value(&p).unwrap();
            assert_eq!(v["name"], *name, "{v}");
            if *name != "lightgbm" {
                // a lightgbm config names a model file, unset by default
                let back: PolicyConfig = serde_json::from_value(v).unwrap();
                assert_eq!(back, p);
            }
        }
    }

    #[test]
    fn aliases_and_spellings() {
        for (given, want) in [
            ("OPT", "belady"),
            ("optimal", "belady"),
            ("infinite", "ideal"),
            ("Conversation-Aware", "conversation_aware"),
            ("S3_FIFO", "s3fifo"),
        ] {
            assert_eq!(given.parse::<PolicyConfig>().unwrap().name(), want);
        }
        let e = "nope".parse::<PolicyConfig>().unwrap_err();
        assert!(
            e.contains("unknown eviction policy 'nope'") && e.contains("lightgbm"),
            "{e}"
        );
    }

    #[test]
    fn parsing_lightgbm_reads_no_file_and_loading_names_the_missing_one() {
        let mut p: PolicyConfig = "lightgbm".parse().unwrap();
        let mut q: PolicyConfig =
            serde_json::from_str(r#"{"name": "lightgbm", "model": "/nonexistent/m.txt"}"#).unwrap();
        let e = q.load_files().unwrap_err();
        assert!(e.contains("/nonexistent/m.txt"), "{e}");
        // the bare name's model is the application's to choose
        assert!(p.load_files().unwrap_err().contains("no model file"));
    }
}
