//! `simulate --lmcache-log FILE` (issue 24): the ticks of LMCache's multi-process eviction loop
//! from the server's own log, put on the vLLM log's clock (`inferencelab_trace::lmcache_log`),
//! for the engine's `LoggedLoop` (docs/semantics.md, "LMCache's multi-process mode").

use anyhow::bail;
use inferencelab_sim::LmcacheMode;
use inferencelab_trace::lmcache_log::read_evicting_ticks;
use inferencelab_trace::Trace;

use crate::cli::SimulateArgs;

/// Logged ticks this far before the first request or after the last event are another run's
/// (a server log that spans several runs) and are left out.
const OUTSIDE_S: f64 = 60.0;

/// Refuse `--lmcache-log` where it cannot apply, before any input is read.
pub(super) fn check_args(args: &SimulateArgs) -> anyhow::Result<()> {
    let Some(path) = &args.lmcache_log else {
        return Ok(());
    };
    let shown = path.display();
    if args.lmcache_mode != LmcacheMode::Mp {
        bail!(
            "--lmcache-log {shown}: a `lmcache server` log times the eviction loop of LMCache's \
             multi-process mode; add --lmcache-mode mp (the in-process LMCache has no such loop)"
        );
    }
    if args.replicas.is_some_and(|n| n > 1) || !args.replica_logs.is_empty() {
        bail!(
            "--lmcache-log {shown}: one LMCache server's log times one vLLM's LMCache; it is not \
             taken with --replicas or --replica-logs (drop it, or simulate one replica's log)"
        );
    }
    Ok(())
}

/// Read `--lmcache-log` into `trace.lmcache_evicting_ticks_s` ([`check_args`] first). Prints
/// what it found.
pub(super) fn attach(args: &SimulateArgs, trace: &mut Trace) -> anyhow::Result<()> {
    let Some(path) = &args.lmcache_log else {
        return Ok(());
    };
    let shown = path.display();
    let Some(origin) = trace.clock_origin else {
        bail!(
            "--lmcache-log {shown}: --input-file {} is not a vLLM server log, so there is no \
             wall clock to put LMCache's stamps on; give the vLLM log of the same run (with \
             --enable-log-requests) as --input-file",
            args.input.input_file.display()
        );
    };
    let ticks = read_evicting_ticks(path)?;
    if ticks.is_empty() {
        let note = format!(
            "--lmcache-log {shown} has no `triggering eviction` line (LMCache's L1 never reached \
             its watermark): the eviction loop keeps the assumed clock (1 s apart, the first \
             0.5 s after the first request)"
        );
        eprintln!("note: {note}");
        trace.notes.push(note);
        return Ok(());
    }
    let end = trace
        .requests
        .iter()
        .map(|r| r.finish_time.unwrap_or(r.timestamp).max(r.timestamp))
        .chain(trace.kv_sent_s.values().copied())
        .fold(0.0f64, f64::max);
    let on_clock: Vec<(f64, &_)> = ticks.iter().map(|t| (t.seconds_after(origin), t)).collect();
    let kept: Vec<(f64, &_)> = on_clock
        .iter()
        .copied()
        .filter(|&(s, _)| (-OUTSIDE_S..=end + OUTSIDE_S).contains(&s))
        .collect();
    let (Some(first), Some(last)) = (kept.first(), kept.last()) else {
        bail!(
            "--lmcache-log {shown}: none of its {} evicting ticks ({} to {}, lines {} to {}) \
             comes within {OUTSIDE_S} s of the requests of {} (vLLM's {origin} and {end:.1} s \
             on): give the LMCache log of the same run, written on the same machine",
            ticks.len(),
            ticks[0],
            ticks[ticks.len() - 1],
            ticks[0].line,
            ticks[ticks.len() - 1].line,
            args.input.input_file.display()
        );
    };
    trace.lmcache_evicting_ticks_s = kept.iter().map(|&(s, _)| s).collect();
    let mut note = format!(
        "LMCache's eviction loop from --lmcache-log {shown}: {} evicting ticks (lines {} to {}), \
         {:.3} to {:.3} s after the first request (vLLM's {origin}); the loop ticks at them, \
         whole periods apart between them, at their mean period before and after",
        kept.len(),
        first.1.line,
        last.1.line,
        first.0,
        last.0
    );
    if kept.len() < ticks.len() {
        note += &format!(
            "; {} ticks more than {OUTSIDE_S} s outside the requests' time were left out \
             (another run's)",
            ticks.len() - kept.len()
        );
    }
    eprintln!("note: {note}");
    trace.notes.push(note);
    Ok(())
}
