//! The exact commands of a point: `vllm serve` (flags and environment), `lmcache server` in
//! multi-process mode, and the `inferencelab bench` replay; shell quoting for `--dry-run`.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use super::config::{
    ExperimentConfig, LmcacheMode, LmcacheSection, CONVERSATION_AWARE, KEEP_ALIVE_ENV,
};
use super::grid::{fmt_gb, fmt_rate, ExpPoint};

/// The exact server command of a point on a slot.
#[derive(Debug, Clone, Serialize)]
pub struct ServerCommand {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub port: u16,
    /// `lmcache.mode: mp`: the `lmcache server` started before vLLM.
    pub lmcache: Option<LmcacheServerCommand>,
}

/// LMCache's multi-process server of a point (`lmcache server`, LMCache 0.5.6's
/// `lmcache/cli/commands/server.py` flags; vLLM attaches with `LMCacheMPConnector`,
/// `lmcache/integration/vllm/lmcache_mp_connector.py`).
#[derive(Debug, Clone, Serialize)]
pub struct LmcacheServerCommand {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The request (ZMQ) port vLLM connects to.
    pub port: u16,
    /// The HTTP port with `/metrics` (`lmcache_mp_*`), polled until it answers.
    pub http_port: u16,
}

/// The multi-process server of a point whose vLLM serves on `port` (its two ports follow).
fn lmcache_server_command(lm: &LmcacheSection, p: &ExpPoint, port: u16) -> LmcacheServerCommand {
    let (zmq, http) = (port + 1, port + 2);
    let mut argv = lm.command.clone();
    argv.extend([
        "server".into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        zmq.to_string(),
        "--chunk-size".into(),
        lm.chunk_size.to_string(),
        "--l1-size-gb".into(),
        format!("{}", p.cpu_gb),
        "--eviction-policy".into(),
        p.cache_policy.clone(),
    ]);
    if let Some(w) = lm.eviction_trigger_watermark {
        argv.extend(["--eviction-trigger-watermark".into(), w.to_string()]);
    }
    if let Some(r) = lm.eviction_ratio {
        argv.extend(["--eviction-ratio".into(), r.to_string()]);
    }
    argv.extend([
        "--supported-transfer-mode".into(),
        "auto".into(),
        "--http-host".into(),
        "127.0.0.1".into(),
        "--http-port".into(),
        http.to_string(),
    ]);
    argv.extend(lm.extra_args.iter().cloned());
    let mut env = vec![("PYTHONHASHSEED".to_string(), "0".to_string())];
    let mut keys: Vec<_> = lm.env.iter().collect();
    keys.sort();
    env.extend(keys.into_iter().map(|(k, v)| (k.clone(), v.clone())));
    LmcacheServerCommand {
        argv,
        env,
        port: zmq,
        http_port: http,
    }
}

/// The folder, in the experiment's folder `dir`, that holds InferenceLab's LMCache policy
/// ([`write_lmcache_policy`]): on `PYTHONPATH`, its `sitecustomize.py` registers
/// `conversation_aware` in LMCache's `POLICY_MAPPING` when vLLM's Python starts.
pub fn lmcache_policy_dir(dir: &Path) -> PathBuf {
    std::path::absolute(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .join("lmcache_policy")
}

/// The policy's files, as shipped in `python/lmcache_policy/`, and the bundled scorer.
const POLICY_FILES: [(&str, &str); 3] = [
    (
        "inferencelab_cache_policy.py",
        include_str!("../../../../python/lmcache_policy/inferencelab_cache_policy.py"),
    ),
    (
        "sitecustomize.py",
        include_str!("../../../../python/lmcache_policy/sitecustomize.py"),
    ),
    (
        "scorer.yaml",
        include_str!("../../../../configs/scorer_default.yaml"),
    ),
];

/// Whether a point's server runs InferenceLab's `conversation_aware` inside LMCache.
pub(super) fn uses_conversation_aware(cfg: &ExperimentConfig, p: &ExpPoint) -> bool {
    p.lmcache
        && p.cache_policy == CONVERSATION_AWARE
        && cfg
            .lmcache
            .as_ref()
            .is_some_and(|l| l.mode == LmcacheMode::Inprocess)
}

/// Write the policy's files into [`lmcache_policy_dir`] when a point of `points` uses it;
/// the folder, or None when none does.
pub fn write_lmcache_policy(
    cfg: &ExperimentConfig,
    points: &[ExpPoint],
    dir: &Path,
) -> std::io::Result<Option<PathBuf>> {
    if !points.iter().any(|p| uses_conversation_aware(cfg, p)) {
        return Ok(None);
    }
    let to = lmcache_policy_dir(dir);
    std::fs::create_dir_all(&to)?;
    for (name, text) in POLICY_FILES {
        std::fs::write(to.join(name), text)?;
    }
    Ok(Some(to))
}

/// The environment that makes LMCache's in-process engine run `conversation_aware`: the
/// policy's folder first on `PYTHONPATH` (before `inherited`, the one vLLM would have had),
/// and its scorer.
fn conversation_aware_env(
    cfg: &ExperimentConfig,
    dir: &Path,
    inherited: Option<String>,
) -> Vec<(String, String)> {
    let policy = lmcache_policy_dir(dir);
    let path = match inherited.filter(|s| !s.is_empty()) {
        Some(rest) => format!("{}:{rest}", policy.display()),
        None => policy.display().to_string(),
    };
    let scorer = cfg
        .lmcache
        .as_ref()
        .and_then(|l| l.scorer_config.as_ref())
        .map_or_else(
            || policy.join("scorer.yaml"),
            |f| std::path::absolute(f).unwrap_or_else(|_| f.clone()),
        );
    vec![
        ("PYTHONPATH".into(), path),
        (
            "INFERENCELAB_SCORER_CONFIG".into(),
            scorer.display().to_string(),
        ),
    ]
}

/// The server command of point `p` on `slot` (GPUs `devices`) of the experiment whose folder
/// is `dir`.
pub fn server_command(
    cfg: &ExperimentConfig,
    p: &ExpPoint,
    slot: usize,
    devices: &[String],
    dir: &Path,
) -> ServerCommand {
    let port = cfg.vllm.port_base + (slot * cfg.ports_per_slot()) as u16;
    let mut argv = cfg.vllm.command.clone();
    argv.extend([
        "serve".into(),
        cfg.model.hf_id.clone(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--served-model-name".into(),
        cfg.served_name(),
        "--tensor-parallel-size".into(),
        cfg.tensor_parallel_size.to_string(),
        "--block-size".into(),
        cfg.vllm.block_size.to_string(),
    ]);
    if let Some(u) = cfg.vllm.gpu_memory_utilization {
        argv.extend(["--gpu-memory-utilization".into(), u.to_string()]);
    }
    if let Some(l) = cfg.vllm.max_model_len {
        argv.extend(["--max-model-len".into(), l.to_string()]);
    }
    match cfg.vllm.enable_prefix_caching {
        Some(true) => argv.push("--enable-prefix-caching".into()),
        Some(false) => argv.push("--no-enable-prefix-caching".into()),
        None => {}
    }
    if let Some(n) = p.num_gpu_blocks_override {
        argv.extend(["--num-gpu-blocks-override".into(), n.to_string()]);
    }
    if let Some(f) = &cfg.vllm.log_requests_flag {
        argv.push(f.clone());
    }
    if cfg.vllm.enable_log_outputs {
        argv.push("--enable-log-outputs".into());
    }
    argv.push("--enable-prompt-tokens-details".into());
    let lmcache = cfg.lmcache.as_ref().filter(|_| p.lmcache);
    let mp = lmcache
        .filter(|l| l.mode == LmcacheMode::Mp)
        .map(|l| lmcache_server_command(l, p, port));
    if let Some(m) = &mp {
        argv.extend([
            "--kv-transfer-config".into(),
            json!({
                "kv_connector": "LMCacheMPConnector",
                "kv_role": "kv_both",
                "kv_connector_extra_config": {
                    "lmcache.mp.host": "tcp://127.0.0.1",
                    "lmcache.mp.port": m.port,
                },
            })
            .to_string(),
        ]);
    } else if lmcache.is_some() {
        argv.extend([
            "--kv-transfer-config".into(),
            r#"{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}"#.into(),
        ]);
    }
    if p.router.as_deref() == Some("kv_aware") {
        // vLLM's flag (vllm/config/kv_events.py): `*` binds; no topic, as vllm-router 0.1.17's
        // static `--kv-event-source` subscribes with topic "" and skips every other
        argv.extend([
            "--kv-events-config".into(),
            json!({
                "enable_kv_cache_events": true,
                "publisher": "zmq",
                "endpoint": format!("tcp://*:{}", kv_events_port(cfg, slot)),
            })
            .to_string(),
        ]);
    }
    argv.extend(cfg.vllm.extra_args.iter().cloned());
    let mut env = vec![
        ("CUDA_VISIBLE_DEVICES".to_string(), devices.join(",")),
        ("PYTHONHASHSEED".into(), "0".into()),
        ("VLLM_LOGGING_LEVEL".into(), "DEBUG".into()),
    ];
    if let Some(s) = cfg.vllm.http_timeout_keep_alive_s {
        env.push((KEEP_ALIVE_ENV.into(), s.to_string()));
    }
    if let Some(lm) = lmcache.filter(|_| mp.is_none()) {
        env.extend([
            ("LMCACHE_USE_EXPERIMENTAL".into(), "True".into()),
            ("LMCACHE_CHUNK_SIZE".into(), lm.chunk_size.to_string()),
            (
                "LMCACHE_LOCAL_CPU".into(),
                if p.cpu_gb > 0.0 { "True" } else { "False" }.into(),
            ),
            ("LMCACHE_MAX_LOCAL_CPU_SIZE".into(), fmt_gb(p.cpu_gb)),
            ("LMCACHE_CACHE_POLICY".into(), p.cache_policy.clone()),
        ]);
        if let Some(d) = &lm.local_disk {
            env.push(("LMCACHE_LOCAL_DISK".into(), d.clone()));
            env.push((
                "LMCACHE_MAX_LOCAL_DISK_SIZE".into(),
                format!("{:.1}", lm.max_local_disk_size),
            ));
        }
    }
    let policy_on_path = uses_conversation_aware(cfg, p);
    if policy_on_path {
        // the YAML's own PYTHONPATH, else the runner's, stays behind the policy's folder
        let inherited = cfg
            .vllm
            .env
            .get("PYTHONPATH")
            .cloned()
            .or_else(|| std::env::var("PYTHONPATH").ok());
        env.extend(conversation_aware_env(cfg, dir, inherited));
    }
    for (k, v) in &cfg.vllm.env {
        if k == "PYTHONPATH" && policy_on_path {
            continue;
        }
        env.push((k.clone(), v.clone()));
    }
    ServerCommand {
        argv,
        env,
        port,
        lmcache: mp,
    }
}

/// Where the replica on `slot` of a `kv_aware` point publishes its KV events (replica k is on
/// slot k).
fn kv_events_port(cfg: &ExperimentConfig, slot: usize) -> u16 {
    (cfg.kv_events_port() as usize + slot).min(u16::MAX as usize) as u16
}

/// What a point runs, for the runner's output: LMCache or not, and the arrival process.
pub fn point_note(cfg: &ExperimentConfig, p: &ExpPoint) -> String {
    let lmcache = if p.lmcache {
        let mode = match p.lmcache_mode {
            Some(LmcacheMode::Mp) => " (lmcache server)",
            _ => "",
        };
        format!("LMCache {} GB {}{mode}", fmt_gb(p.cpu_gb), p.cache_policy)
    } else {
        "no LMCache".into()
    };
    let arrival = p
        .arrival
        .clone()
        .unwrap_or_else(|| cfg.arrival(&p.trace_path, p.request_rate));
    let fleet = match (p.replicas, &p.router) {
        (Some(n), Some(r)) => format!("{n} replicas behind vllm-router --policy {r}; "),
        _ => String::new(),
    };
    format!("{fleet}{lmcache}; arrival: {arrival}")
}

/// The bench command of a point.
pub fn bench_command(
    cfg: &ExperimentConfig,
    p: &ExpPoint,
    port: u16,
    bench_exe: &Path,
    out: &Path,
) -> Vec<String> {
    let mut argv = vec![
        bench_exe.display().to_string(),
        "bench".into(),
        "--base-url".into(),
        format!("http://127.0.0.1:{port}"),
        "--model".into(),
        cfg.served_name(),
        "--input-file".into(),
        p.trace_path.display().to_string(),
        "--request-rate".into(),
        fmt_rate(p.request_rate),
        "--output-dir".into(),
        out.display().to_string(),
    ];
    if let Some(n) = cfg.workload.num_prompts {
        argv.extend(["--num-prompts".into(), n.to_string()]);
    }
    if let Some(t) = cfg.workload.time_limit_s {
        argv.extend(["--duration".into(), t.to_string()]);
    }
    argv.extend(cfg.workload.bench_args.iter().cloned());
    argv
}

/// POSIX shell quoting for `--dry-run` output.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// vLLM's router in front of a fleet point's replicas (`vllm-router` 0.1.17's flags:
/// `--host --port --worker-urls URL... --policy P --prometheus-port`; with `kv_aware`, one
/// `--kv-event-source URL=tcp://127.0.0.1:PORT` per replica, `--kv-event-block-size` (vLLM's
/// `--block-size`) and `--kv-event-model` (the served name: only the index's identity, the
/// router asks the workers to tokenize)).
#[derive(Debug, Clone, Serialize)]
pub struct RouterCommand {
    pub argv: Vec<String>,
    pub port: u16,
}

pub fn router_command(cfg: &ExperimentConfig, p: &ExpPoint, worker_ports: &[u16]) -> RouterCommand {
    let port = cfg.router_port();
    let fleet = cfg.fleet.as_ref();
    let mut argv = fleet.map_or_else(|| vec!["vllm-router".into()], |f| f.command.clone());
    argv.extend([
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--prometheus-port".into(),
        (port as u32 + 1).min(u16::MAX as u32).to_string(),
        "--policy".into(),
        p.router.clone().unwrap_or_else(|| "cache_aware".into()),
        "--worker-urls".into(),
    ]);
    argv.extend(worker_ports.iter().map(|q| format!("http://127.0.0.1:{q}")));
    if p.router.as_deref() == Some("kv_aware") {
        for (k, q) in worker_ports.iter().enumerate() {
            argv.extend([
                "--kv-event-source".into(),
                format!(
                    "http://127.0.0.1:{q}=tcp://127.0.0.1:{}",
                    kv_events_port(cfg, k)
                ),
            ]);
        }
        argv.extend([
            "--kv-event-block-size".into(),
            cfg.vllm.block_size.to_string(),
            "--kv-event-model".into(),
            cfg.served_name(),
        ]);
    }
    if let Some(f) = fleet {
        argv.extend(f.extra_args.iter().cloned());
    }
    RouterCommand { argv, port }
}

/// The bench of a fleet point: through the router, with the `/metrics` scrapes off (the router
/// routes them with its policy too, which moves round_robin's counter); the replicas'
/// counters are read from each replica after the replay.
pub fn fleet_bench_command(
    cfg: &ExperimentConfig,
    p: &ExpPoint,
    bench_exe: &Path,
    out: &Path,
) -> Vec<String> {
    let mut argv = bench_command(cfg, p, cfg.router_port(), bench_exe, out);
    argv.extend(["--metrics-interval".into(), "0".into()]);
    argv
}
