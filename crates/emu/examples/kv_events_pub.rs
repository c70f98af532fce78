//! Publish sample KV event batches on an endpoint, 20 ms apart, the way `serve
//! --kv-events-config` will (issue 21): `scripts/kv_events_check.py` subscribes with pyzmq and
//! decodes them with vLLM's own msgspec types.
//!
//! `cargo run -p inferencelab-emu --example kv_events_pub -- tcp://127.0.0.1:8470 kv-events 200`

use inferencelab_emu::kv_events::{KvEvent, KvEventBatch, KvEventsConfig, ZmqPublisher};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let endpoint = args
        .first()
        .cloned()
        .unwrap_or("tcp://127.0.0.1:5557".into());
    let topic = args.get(1).cloned().unwrap_or_default();
    let count: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100);
    let config = KvEventsConfig {
        enable_kv_cache_events: true,
        endpoint: endpoint.replace("127.0.0.1", "*"),
        topic,
        ..Default::default()
    };
    let mut publisher = ZmqPublisher::start(&config).await?;
    eprintln!("publishing on {}", publisher.endpoint);
    for i in 0..count {
        let batch = KvEventBatch {
            ts: 1_700_000_000.0 + i as f64,
            events: vec![
                KvEvent::BlockStored {
                    block_hashes: vec![i, u64::MAX - i],
                    parent_block_hash: i.checked_sub(1),
                    token_ids: (0..32).collect(),
                    block_size: 16,
                    lora_id: None,
                    medium: Some("GPU".into()),
                    lora_name: None,
                },
                KvEvent::BlockRemoved {
                    block_hashes: vec![i],
                    medium: Some("GPU".into()),
                },
                KvEvent::AllBlocksCleared {},
            ],
            data_parallel_rank: Some(0),
        };
        publisher.publish(&batch).await?;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}
