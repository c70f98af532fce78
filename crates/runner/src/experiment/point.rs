//! One point from start to end: its servers up and healthy, the replay, the counters saved,
//! the servers stopped, and the outcome row.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use super::commands::{bench_command, server_command};
use super::config::ExperimentConfig;
use super::diagnose::{failure_reason, lmcache_check};
use super::grid::ExpPoint;
use super::health::{http_body, http_get, wait_healthy, wait_http};
use super::process::{run_logged, spawn_logged, stop, wait_port_free, PORT_FREE_TIMEOUT};
use super::results::{lmcache_log_path, PointOutcome};
use super::RunOptions;

pub(super) fn run_point(
    cfg: &ExperimentConfig,
    opts: &RunOptions,
    p: &ExpPoint,
    slot: usize,
    devs: &[String],
    dir: &Path,
) -> PointOutcome {
    let started = Instant::now();
    let sc = server_command(cfg, p, slot, devs, dir);
    let log_path = dir.join(format!("{}.log", p.stem));
    let lmc_log_path = lmcache_log_path(dir, p);
    let bench_dir = dir.join(&p.stem);
    let grace = Duration::from_secs_f64(cfg.vllm.stop_grace_s);
    let health_timeout = Duration::from_secs_f64(cfg.vllm.health_timeout_s);
    let mut outcome = PointOutcome {
        point: p.clone(),
        status: "failed".into(),
        reason: None,
        slot,
        devices: devs.to_vec(),
        port: sc.port,
        server_log: log_path.clone(),
        bench_dir: bench_dir.clone(),
        seconds: 0.0,
        stop: None,
        lmcache_log: sc.lmcache.as_ref().map(|_| lmc_log_path.clone()),
        lmcache_stop: None,
        replicas: Vec::new(),
        router_log: None,
        router_port: None,
        router_stop: None,
    };
    let see = |path: &Path, what: String| {
        let why = failure_reason(path)
            .map(|l| format!("; {l}"))
            .unwrap_or_default();
        format!("{what}{why}; see {}", path.display())
    };
    let see_log = |what: String| see(&log_path, what);
    // `lmcache server` (mode mp) starts first and stops last: vLLM connects to it at start-up
    // and talks to it until it exits.
    let mut lmc_child: Option<Child> = None;
    let result = (|| -> Result<(), String> {
        wait_port_free(sc.port, PORT_FREE_TIMEOUT)?;
        if let Some(m) = &sc.lmcache {
            wait_port_free(m.port, PORT_FREE_TIMEOUT)?;
            wait_port_free(m.http_port, PORT_FREE_TIMEOUT)?;
            let child = lmc_child.insert(
                spawn_logged(&m.argv, &m.env, &lmc_log_path)
                    .map_err(|e| format!("{e} (is LMCache installed? set lmcache.command)"))?,
            );
            wait_http(
                child,
                m.http_port,
                "/metrics",
                health_timeout,
                "lmcache server",
            )
            .map_err(|e| see(&lmc_log_path, e))?;
        }
        let mut child = spawn_logged(&sc.argv, &sc.env, &log_path)
            .map_err(|e| format!("{e} (is it installed and on PATH? set vllm.command)"))?;
        let r = (|| {
            wait_healthy(&mut child, sc.port, health_timeout).map_err(&see_log)?;
            if p.lmcache {
                lmcache_check(&log_path)?;
            }
            std::fs::create_dir_all(&bench_dir)
                .map_err(|e| format!("{}: {e}", bench_dir.display()))?;
            let lmc_metrics = |name: &str| {
                if let Some(m) = &sc.lmcache {
                    if let Ok(text) = http_get(m.http_port, "/metrics", Duration::from_secs(10)) {
                        let _ = std::fs::write(bench_dir.join(name), http_body(&text));
                    }
                }
            };
            lmc_metrics("lmcache_metrics_start.prom");
            let argv = bench_command(cfg, p, sc.port, &opts.bench_exe, &bench_dir);
            let bench_log = bench_dir.join("bench.log");
            let status = run_logged(&argv, &bench_log)?;
            if let Ok(m) = http_get(sc.port, "/metrics", Duration::from_secs(10)) {
                let _ = std::fs::write(bench_dir.join("metrics_final.prom"), m);
            }
            if sc.lmcache.is_some() {
                // LMCache counts stores and evictions in its own threads (the eviction loop
                // wakes once a second, `eviction_controller.py`): let them finish.
                std::thread::sleep(LMCACHE_SETTLE);
                lmc_metrics("lmcache_metrics_final.prom");
            }
            if let Some(code) = child.try_wait().ok().flatten() {
                return Err(see_log(format!("server died during the replay ({code})")));
            }
            if let Some(code) = lmc_child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(see(
                    &lmc_log_path,
                    format!("lmcache server died during the replay ({code})"),
                ));
            }
            if p.lmcache {
                lmcache_check(&log_path)?;
            }
            if !status.success() {
                return Err(format!(
                    "bench exited with {status}; see {}",
                    bench_log.display()
                ));
            }
            Ok(())
        })();
        outcome.stop = Some(stop(&mut child, grace));
        r
    })();
    if let Some(c) = lmc_child.as_mut() {
        outcome.lmcache_stop = Some(stop(c, grace));
    }
    if let Err(reason) = result {
        outcome.reason = Some(reason);
    } else {
        outcome.status = "ok".into();
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

/// How long the runner waits after the replay before it saves LMCache's final counters.
const LMCACHE_SETTLE: Duration = Duration::from_secs(3);
