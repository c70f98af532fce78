//! Grids of simulation points over one prepared trace, run in parallel with rayon. Results come
//! back in the order of the configs; `on_done` is called as each point finishes (progress).

use rayon::prelude::*;

use crate::config::SimConfig;
use crate::driver::{run, Prepared};
use crate::error::SimResult;
use crate::result::ResultRow as Row;

pub fn run_grid(
    prepared: &Prepared<'_>,
    configs: &[SimConfig],
    on_done: &(dyn Fn(&SimResult<Row>) + Sync),
) -> Vec<SimResult<Row>> {
    // annotate oracles once, before the parallel part (they are shared)
    for c in configs {
        prepared.annotate_for(c);
    }
    configs
        .par_iter()
        .map(|c| {
            let r = run(prepared, c);
            on_done(&r);
            r
        })
        .collect()
}
