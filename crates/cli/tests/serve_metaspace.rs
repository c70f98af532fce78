//! `serve --tokenizer DIR` with SentencePiece-style tokenizer.json files (issue 25): Llama 2's
//! (a normalizer that prepends `▁`, a ByteFallback/Fuse/Strip decoder, a `<s>` post-processor)
//! and Mistral's (a `Metaspace` pre-tokenizer and decoder). Their words are `▁word` tokens that
//! lose their space when decoded one at a time, so `serve` decodes the answer incrementally as
//! vLLM does: the streamed deltas, the one response's text and the decoding of all ids at once
//! agree, words keep their spaces, and `echo` returns the prompt ids with the BOS (vLLM's
//! `res.prompt_token_ids`).

use serde_json::{json, Value};

mod common;

fn post_json(addr: &str, path: &str, body: &Value) -> Value {
    serde_json::from_str(&common::post_ok(addr, path, &body.to_string())).unwrap()
}

/// The events of an SSE body, `[DONE]` left out.
fn sse_events(addr: &str, path: &str, body: &Value) -> Vec<Value> {
    let sse = common::post_ok(addr, path, &body.to_string());
    assert!(sse.contains("data: [DONE]"), "{sse}");
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// `<unk>` 0, `<s>` 1, `</s>` 2, `<0x0A>` 3, `▁` 4, `a`..`z` 5..30, then every prefix of
/// `▁hello` (31..35), `▁world` (36..40), `▁cache` (41..45), merged letter by letter (BPE with
/// byte fallback, as Llama 2's and Mistral's are).
fn sentencepiece_tokenizer(dir: &std::path::Path, llama2: bool) {
    let mut vocab: Vec<String> = ["<unk>", "<s>", "</s>", "<0x0A>", "\u{2581}"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vocab.extend(('a'..='z').map(String::from));
    let mut merges = Vec::new();
    for word in ["hello", "world", "cache"] {
        let chars: Vec<String> = format!("\u{2581}{word}")
            .chars()
            .map(String::from)
            .collect();
        let mut acc = chars[0].clone();
        for c in &chars[1..] {
            merges.push(json!([acc, c]));
            acc.push_str(c);
            vocab.push(acc.clone());
        }
    }
    let vocab: serde_json::Map<String, Value> = vocab
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, json!(i)))
        .collect();
    let special = |id: u32, s: &str| {
        json!({"id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true})
    };
    let metaspace = json!({"type": "Metaspace", "replacement": "\u{2581}",
        "prepend_scheme": "first", "split": false});
    let (normalizer, pre_tokenizer, decoder) = if llama2 {
        (
            json!({"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u{2581}"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]}),
            Value::Null,
            json!({"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}),
        )
    } else {
        (
            Value::Null,
            metaspace.clone(),
            json!({"type": "Sequence", "decoders": [
                metaspace, {"type": "ByteFallback"}, {"type": "Fuse"}]}),
        )
    };
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "decoder": decoder,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true,
            "byte_fallback": true, "ignore_merges": false, "vocab": vocab, "merges": merges},
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"tokenizer_class":"LlamaTokenizerFast","bos_token":"<s>","eos_token":"</s>"}"#,
    )
    .unwrap();
}

const HELLO: u64 = 35;

#[test]
fn sentencepiece_words_keep_their_spaces_streamed_or_not() {
    for llama2 in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        sentencepiece_tokenizer(dir.path(), llama2);
        let (mut child, addr) = common::spawn_serve(&[
            "--tokenizer",
            dir.path().to_str().unwrap(),
            "--served-model-name",
            "tiny",
            "--time-scale",
            "0",
        ]);
        let req = json!({"model": "tiny", "prompt": "hello", "max_tokens": 12,
            "temperature": 0});
        let whole = post_json(&addr, "/v1/completions", &req);
        let text = whole["choices"][0]["text"].as_str().unwrap().to_string();
        assert_eq!(whole["usage"]["prompt_tokens"], 2, "<s> ▁hello");
        assert_eq!(whole["usage"]["completion_tokens"], 12);
        // every generated word is a `▁` token decoded with its space
        let words: Vec<&str> = text.split(' ').collect();
        assert_eq!(words.len(), 13, "{llama2} {text:?}");
        assert_eq!(words[0], "", "{llama2} {text:?}");
        assert!(
            words[1..]
                .iter()
                .all(|w| w.len() >= 3 && w.bytes().all(|b| b.is_ascii_lowercase())),
            "{llama2} {text:?}"
        );
        // the streamed deltas concatenate to the same text
        let mut sreq = req.clone();
        sreq["stream"] = json!(true);
        let streamed: String = sse_events(&addr, "/v1/completions", &sreq)
            .iter()
            .filter_map(|e| e["choices"][0]["text"].as_str().map(str::to_string))
            .collect();
        assert_eq!(streamed, text, "{llama2}");
        // and to what decoding all ids at once gives: the prompt and answer re-tokenize to
        // the BOS, the prompt and one token per generated word, which decode back to the text
        let ids = post_json(
            &addr,
            "/tokenize",
            &json!({"prompt": format!("hello{text}")}),
        )["tokens"]
            .clone();
        let ids = ids.as_array().unwrap();
        assert_eq!(ids.len(), 2 + 12, "{llama2} {ids:?}");
        assert_eq!(ids[..2], [json!(1), json!(HELLO)]);
        let back = post_json(&addr, "/detokenize", &json!({"tokens": ids[1..]}));
        assert_eq!(back["prompt"], format!("hello{text}"), "{llama2}");
        // a stop string with a word's space is found in that text and cuts it there
        let stop = format!(" {}", words[3]);
        let mut stop_req = req.clone();
        stop_req["stop"] = json!([stop]);
        let stopped = post_json(&addr, "/v1/completions", &stop_req);
        let c = &stopped["choices"][0];
        assert_eq!(c["finish_reason"], "stop", "{llama2} {stop:?} {text:?}");
        assert_eq!(c["stop_reason"], json!(stop));
        assert_eq!(c["text"], text[..text.find(&stop).unwrap()], "{llama2}");
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// vLLM 0.32 and 0.33 echo `res.prompt_token_ids`, the engine's prompt with the BOS the
/// tokenizer's post-processor added; the echoed text is the prompt as sent.
#[test]
fn echo_returns_the_prompt_ids_with_the_bos() {
    let dir = tempfile::tempdir().unwrap();
    sentencepiece_tokenizer(dir.path(), true);
    let (mut child, addr) = common::spawn_serve(&[
        "--tokenizer",
        dir.path().to_str().unwrap(),
        "--served-model-name",
        "tiny",
        "--time-scale",
        "0",
    ]);
    let req = json!({"model": "tiny", "prompt": "hello world", "max_tokens": 3, "echo": true,
        "logprobs": 1, "temperature": 0});
    let whole = post_json(&addr, "/v1/completions", &req);
    let choice = &whole["choices"][0];
    let text = choice["text"].as_str().unwrap();
    assert!(text.starts_with("hello world "), "{text:?}");
    // logprobs cover the echoed prompt ids (BOS first) and then the answer
    let tokens = choice["logprobs"]["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 3 + 3, "{tokens:?}");
    assert_eq!(tokens[..3], [json!("<s>"), json!("hello"), json!("world")]);
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let events = sse_events(&addr, "/v1/completions", &sreq);
    let first = &events[0]["choices"][0];
    assert_eq!(first["prompt_token_ids"], json!([1, HELLO, 40]));
    let streamed: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, text);
    let _ = child.kill();
    let _ = child.wait();
}
