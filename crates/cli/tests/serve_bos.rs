//! `serve --tokenizer DIR` with a Llama-style tokenizer.json whose post-processor adds a BOS
//! (issue 25): completions and `/tokenize` of a prompt count it (vLLM's `add_special_tokens`
//! default true), chat does not add a second one to the template's (default false), and the
//! request field turns it either way. The ids are those vLLM 0.32's tokenizer gives the same
//! files (crates/emu/src/tokenizer.rs's unit test).

mod common;

fn post(addr: &str, path: &str, body: &str) -> serde_json::Value {
    serde_json::from_str(&common::post_ok(addr, path, body)).unwrap()
}

/// `<s>` 0, `</s>` 1, `hello` 5, ` world` 4, ` cache` 6; `<s> $A` post-processor; a chat
/// template that writes `{{ bos_token }}` itself, as Llama 3's does.
fn llama_style_tokenizer(dir: &std::path::Path) {
    let special = |id: u32, s: &str| {
        format!(
            r#"{{"id":{id},"content":"{s}","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}}"#
        )
    };
    let json = format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{},{}],"normalizer":null,
          "pre_tokenizer":{{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}},
          "post_processor":{{"type":"TemplateProcessing",
            "single":[{{"SpecialToken":{{"id":"<s>","type_id":0}}}},{{"Sequence":{{"id":"A","type_id":0}}}}],
            "pair":[{{"SpecialToken":{{"id":"<s>","type_id":0}}}},{{"Sequence":{{"id":"A","type_id":0}}}},
                    {{"SpecialToken":{{"id":"<s>","type_id":1}}}},{{"Sequence":{{"id":"B","type_id":1}}}}],
            "special_tokens":{{"<s>":{{"id":"<s>","ids":[0],"tokens":["<s>"]}}}}}},
          "decoder":{{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}},
          "model":{{"type":"WordLevel","unk_token":"<unk>","vocab":{{"<s>":0,"</s>":1,"<unk>":2,
            "\u0120hello":3,"\u0120world":4,"hello":5,"\u0120cache":6}}}}}}"#,
        special(0, "<s>"),
        special(1, "</s>")
    );
    std::fs::write(dir.join("tokenizer.json"), json).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"tokenizer_class":"PreTrainedTokenizerFast","bos_token":"<s>","eos_token":"</s>",
            "chat_template":"{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"}"#,
    )
    .unwrap();
}

#[test]
fn a_post_processor_bos_is_in_every_count_vllm_puts_it_in() {
    let dir = tempfile::tempdir().unwrap();
    llama_style_tokenizer(dir.path());
    let (mut child, addr) = common::spawn_serve(&[
        "--tokenizer",
        dir.path().to_str().unwrap(),
        "--served-model-name",
        "tiny",
        "--time-scale",
        "0",
    ]);
    let tok = |body: &str| post(&addr, "/tokenize", body)["tokens"].clone();
    assert_eq!(
        tok(r#"{"prompt":"hello world cache"}"#),
        serde_json::json!([0, 5, 4, 6])
    );
    assert_eq!(
        tok(r#"{"prompt":"hello world cache","add_special_tokens":false}"#),
        serde_json::json!([5, 4, 6])
    );
    // chat: the template's BOS only, unless asked for another
    let chat = r#"{"messages":[{"role":"user","content":"hello world"}]"#;
    assert_eq!(tok(&format!("{chat}}}")), serde_json::json!([0, 5, 4]));
    assert_eq!(
        tok(&format!(r#"{chat},"add_special_tokens":true}}"#)),
        serde_json::json!([0, 0, 5, 4])
    );
    let usage = |path: &str, body: &str| post(&addr, path, body)["usage"]["prompt_tokens"].clone();
    assert_eq!(
        usage(
            "/v1/completions",
            r#"{"model":"tiny","prompt":"hello world cache","max_tokens":2}"#
        ),
        4
    );
    assert_eq!(
        usage(
            "/v1/completions",
            r#"{"model":"tiny","prompt":"hello world cache","max_tokens":2,"add_special_tokens":false}"#
        ),
        3
    );
    assert_eq!(
        usage(
            "/v1/chat/completions",
            r#"{"model":"tiny","messages":[{"role":"user","content":"hello world"}],"max_tokens":2}"#
        ),
        3
    );
    let _ = child.kill();
    let _ = child.wait();
}
