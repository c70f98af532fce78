//! One fleet point (issue 21, docs/replicas.md): N `vllm serve` replicas, one per GPU slot,
//! each on its slot's port and healthy; vLLM's router in front of them; the bench replaying
//! through the router; every replica's `/metrics` saved; the router stopped first, then the
//! replicas (each as a process group: SIGTERM, then SIGKILL).

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use super::commands::{fleet_bench_command, router_command, server_command};
use super::config::ExperimentConfig;
use super::diagnose::{failure_reason, lmcache_check};
use super::grid::ExpPoint;
use super::health::{http_get, wait_healthy, wait_http};
use super::process::{run_logged, spawn_logged, stop, wait_port_free, PORT_FREE_TIMEOUT};
use super::results::{replica_log_path, PointOutcome, ReplicaRun};
use super::RunOptions;

/// Run fleet point `p` on the first `p.replicas` of `slots` ((slot index, devices)).
pub(super) fn run_fleet_point(
    cfg: &ExperimentConfig,
    opts: &RunOptions,
    p: &ExpPoint,
    slots: &[(usize, Vec<String>)],
    dir: &Path,
) -> PointOutcome {
    let started = Instant::now();
    let n = p.replicas.unwrap_or(1);
    let grace = Duration::from_secs_f64(cfg.vllm.stop_grace_s);
    let health_timeout = Duration::from_secs_f64(cfg.vllm.health_timeout_s);
    let bench_dir = dir.join(&p.stem);
    let mut replicas: Vec<ReplicaRun> = Vec::new();
    let mut commands = Vec::new();
    for (k, (slot, devs)) in slots.iter().take(n).enumerate() {
        let sc = server_command(cfg, p, *slot, devs, dir);
        replicas.push(ReplicaRun {
            replica: k,
            slot: *slot,
            devices: devs.clone(),
            port: sc.port,
            log: replica_log_path(dir, p, k),
            metrics: bench_dir.join(format!("metrics_final.replica{k}.prom")),
            stop: None,
        });
        commands.push(sc);
    }
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let rc = router_command(cfg, p, &ports);
    let router_log = dir.join(format!("{}.router.log", p.stem));
    let mut outcome = PointOutcome {
        point: p.clone(),
        status: "failed".into(),
        reason: None,
        slot: replicas.first().map_or(0, |r| r.slot),
        devices: replicas.iter().flat_map(|r| r.devices.clone()).collect(),
        port: rc.port,
        server_log: replica_log_path(dir, p, 0),
        bench_dir: bench_dir.clone(),
        seconds: 0.0,
        stop: None,
        lmcache_log: None,
        lmcache_stop: None,
        replicas: Vec::new(),
        router_log: Some(router_log.clone()),
        router_port: Some(rc.port),
        router_stop: None,
    };
    let see = |path: &Path, what: String| {
        let why = failure_reason(path)
            .map(|l| format!("; {l}"))
            .unwrap_or_default();
        format!("{what}{why}; see {}", path.display())
    };
    let mut children: Vec<Child> = Vec::new();
    let mut router: Option<Child> = None;
    let result = (|| -> Result<(), String> {
        if replicas.len() < n {
            return Err(format!(
                "{n} replicas need {n} GPU slots; the run has {}",
                slots.len()
            ));
        }
        // kv_aware: the replicas' KV event ports too
        let kv_ports = (p.router.as_deref() == Some("kv_aware"))
            .then(|| (0..n).map(|k| cfg.kv_events_port().saturating_add(k as u16)))
            .into_iter()
            .flatten();
        for port in ports
            .iter()
            .copied()
            .chain([rc.port, rc.port.saturating_add(1)])
            .chain(kv_ports)
        {
            wait_port_free(port, PORT_FREE_TIMEOUT)?;
        }
        // every replica starts at once (model loading overlaps), then each must be healthy
        for (sc, r) in commands.iter().zip(&replicas) {
            children.push(
                spawn_logged(&sc.argv, &sc.env, &r.log)
                    .map_err(|e| format!("{e} (is it installed and on PATH? set vllm.command)"))?,
            );
        }
        for (child, r) in children.iter_mut().zip(&replicas) {
            wait_healthy(child, r.port, health_timeout)
                .map_err(|e| see(&r.log, format!("replica {}: {e}", r.replica)))?;
            if p.lmcache {
                lmcache_check(&r.log)?;
            }
        }
        let rchild = router.insert(spawn_logged(&rc.argv, &[], &router_log).map_err(|e| {
            format!("{e} (is vllm-router installed? pip install vllm-router; set fleet.command)")
        })?);
        wait_http(rchild, rc.port, "/health", health_timeout, "vllm-router")
            .map_err(|e| see(&router_log, e))?;
        std::fs::create_dir_all(&bench_dir).map_err(|e| format!("{}: {e}", bench_dir.display()))?;
        let argv = fleet_bench_command(cfg, p, &opts.bench_exe, &bench_dir);
        let bench_log = bench_dir.join("bench.log");
        let status = run_logged(&argv, &bench_log)?;
        for r in &replicas {
            if let Ok(m) = http_get(r.port, "/metrics", Duration::from_secs(10)) {
                let _ = std::fs::write(&r.metrics, m);
            }
        }
        for (child, r) in children.iter_mut().zip(&replicas) {
            if let Some(code) = child.try_wait().ok().flatten() {
                return Err(see(
                    &r.log,
                    format!("replica {} died during the replay ({code})", r.replica),
                ));
            }
        }
        if let Some(code) = router.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            return Err(see(
                &router_log,
                format!("vllm-router died during the replay ({code})"),
            ));
        }
        if !status.success() {
            return Err(format!(
                "bench exited with {status}; see {}",
                bench_log.display()
            ));
        }
        Ok(())
    })();
    // the router first (it would retry on replicas going away), then the replicas
    if let Some(c) = router.as_mut() {
        outcome.router_stop = Some(stop(c, grace));
    }
    for (child, r) in children.iter_mut().zip(replicas.iter_mut()) {
        r.stop = Some(stop(child, grace));
    }
    outcome.stop = replicas.first().and_then(|r| r.stop.clone());
    outcome.replicas = replicas;
    match result {
        Ok(()) => outcome.status = "ok".into(),
        Err(reason) => outcome.reason = Some(reason),
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}
