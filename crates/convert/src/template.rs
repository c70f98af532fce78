//! The chat-template shapes of the model families the registry knows, cut into message blocks so
//! each block is tokenized once and prompts are concatenations of block token ids.
//!
//! Sources (each model's `tokenizer_config.json` `chat_template`), rendered as vLLM's chat
//! endpoint does (template with `add_generation_prompt=True`, then tokenized with
//! `add_special_tokens=False`):
//! - `chatml` (Qwen3): `<|im_start|>{role}\n{content}<|im_end|>\n` per message, no default
//!   system prompt, generation prompt `<|im_start|>assistant\n` (thinking left on, so nothing
//!   is added for it).
//! - `llama3` (Llama 3.1 Instruct): `<|begin_of_text|>`, then always a system block
//!   `<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n
//!   Today Date: 26 Jul 2024\n\n{system}<|eot_id|>` (the template's default date), then
//!   `<|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>` per message,
//!   generation prompt `<|start_header_id|>assistant<|end_header_id|>\n\n`.
//! - `mistral` (Mistral-7B-Instruct-v0.3): `<s>`, `[INST] {user}[/INST]` and
//!   ` {assistant|trim}</s>`; the system prompt is put into the *last* user message only
//!   (`[INST] {system}\n\n{user}[/INST]`), exactly like the template, so with a system prompt
//!   consecutive turns of a conversation share only the history before it, not the system
//!   prompt: this is what a real Mistral chat server's prefix cache sees.
//!
//! Blocks end at a special token (or, for ChatML, at the `\n` between two special tokens), where
//! a Hugging Face tokenizer splits the text anyway, so concatenated block ids equal the ids of the
//! whole rendered prompt. The embedded fallback tokenizer knows no special tokens and tokenizes
//! each block as plain text.

use std::fmt;
use std::str::FromStr;

/// A chat template shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplate {
    ChatMl,
    Llama3,
    Mistral,
}

const LLAMA3_DATE_HEADER: &str =
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";

impl ChatTemplate {
    pub const ALL: [ChatTemplate; 3] = [
        ChatTemplate::ChatMl,
        ChatTemplate::Llama3,
        ChatTemplate::Mistral,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ChatTemplate::ChatMl => "chatml",
            ChatTemplate::Llama3 => "llama3",
            ChatTemplate::Mistral => "mistral",
        }
    }

    /// The template of a registry `tokenizer_family` (`qwen3`, `llama3`, `mistral`); ChatML for
    /// anything else (the most common shape).
    pub fn for_family(family: Option<&str>) -> Self {
        match family.map(str::to_ascii_lowercase).as_deref() {
            Some(f) if f.starts_with("llama") => ChatTemplate::Llama3,
            Some(f) if f.starts_with("mistral") => ChatTemplate::Mistral,
            _ => ChatTemplate::ChatMl,
        }
    }

    /// Text before the first message: BOS and the system block where the template puts it there.
    pub fn prefix(self, system: Option<&str>) -> String {
        match self {
            ChatTemplate::ChatMl => match system {
                Some(s) => format!("<|im_start|>system\n{s}<|im_end|>\n"),
                None => String::new(),
            },
            ChatTemplate::Llama3 => format!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{LLAMA3_DATE_HEADER}{}<|eot_id|>",
                system.map_or("", str::trim)
            ),
            ChatTemplate::Mistral => "<s>".to_string(),
        }
    }

    /// A user message as it appears in the history (and as the last message when the template
    /// does not move the system prompt).
    pub fn user(self, content: &str) -> String {
        match self {
            ChatTemplate::ChatMl => format!("<|im_start|>user\n{content}<|im_end|>\n"),
            ChatTemplate::Llama3 => {
                format!(
                    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>",
                    content.trim()
                )
            }
            ChatTemplate::Mistral => format!("[INST] {content}[/INST]"),
        }
    }

    /// The last user message when it differs from [`ChatTemplate::user`] (Mistral with a system
    /// prompt), else `None`.
    pub fn last_user(self, content: &str, system: Option<&str>) -> Option<String> {
        match (self, system) {
            (ChatTemplate::Mistral, Some(s)) => Some(format!("[INST] {s}\n\n{content}[/INST]")),
            _ => None,
        }
    }

    /// The constant text around an answer in [`ChatTemplate::assistant`]: `(head, tail)`.
    pub fn assistant_frame(self) -> (&'static str, &'static str) {
        match self {
            ChatTemplate::ChatMl => ("<|im_start|>assistant\n", "<|im_end|>\n"),
            ChatTemplate::Llama3 => (
                "<|start_header_id|>assistant<|end_header_id|>\n\n",
                "<|eot_id|>",
            ),
            ChatTemplate::Mistral => (" ", "</s>"),
        }
    }

    /// An earlier answer in the history.
    pub fn assistant(self, content: &str) -> String {
        match self {
            ChatTemplate::ChatMl => format!("<|im_start|>assistant\n{content}<|im_end|>\n"),
            ChatTemplate::Llama3 => format!(
                "<|start_header_id|>assistant<|end_header_id|>\n\n{}<|eot_id|>",
                content.trim()
            ),
            ChatTemplate::Mistral => format!(" {}</s>", content.trim()),
        }
    }

    /// `add_generation_prompt=True`.
    pub fn generation_prompt(self) -> &'static str {
        match self {
            ChatTemplate::ChatMl => "<|im_start|>assistant\n",
            ChatTemplate::Llama3 => "<|start_header_id|>assistant<|end_header_id|>\n\n",
            ChatTemplate::Mistral => "",
        }
    }

    /// The whole prompt of the last turn of `turns` (user, answer) pairs, rendered in one go:
    /// the reference the block-wise rendering is tested against.
    pub fn render(self, system: Option<&str>, turns: &[(&str, &str)], next_user: &str) -> String {
        let mut s = self.prefix(system);
        for (u, a) in turns {
            s.push_str(&self.user(u));
            s.push_str(&self.assistant(a));
        }
        s.push_str(
            &self
                .last_user(next_user, system)
                .unwrap_or_else(|| self.user(next_user)),
        );
        s.push_str(self.generation_prompt());
        s
    }
}

impl fmt::Display for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ChatTemplate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChatTemplate::ALL
            .into_iter()
            .find(|t| t.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                format!(
                    "unknown chat template '{s}'; expected one of: {}",
                    ChatTemplate::ALL.map(|t| t.name()).join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_matches_qwen3() {
        let p = ChatTemplate::ChatMl.render(Some("Be brief."), &[("hi", "hello")], "and?");
        assert_eq!(
            p,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n\
             <|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\nand?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(
            ChatTemplate::ChatMl.render(None, &[], "hi"),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn llama3_matches_llama_3_1_instruct() {
        let p = ChatTemplate::Llama3.render(None, &[], " hi \n");
        assert_eq!(
            p,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
             Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn mistral_puts_the_system_prompt_into_the_last_user_message() {
        let t = ChatTemplate::Mistral;
        assert_eq!(
            t.render(Some("SYS"), &[("u1", " a1 ")], "u2"),
            "<s>[INST] u1[/INST] a1</s>[INST] SYS\n\nu2[/INST]"
        );
        assert_eq!(t.render(None, &[], "u1"), "<s>[INST] u1[/INST]");
    }

    #[test]
    fn assistant_blocks_are_framed_by_constant_text() {
        for t in ChatTemplate::ALL {
            let (head, tail) = t.assistant_frame();
            let block = t.assistant(" ok ");
            assert!(block.starts_with(head) && block.ends_with(tail), "{t}");
            // ChatML keeps the content as is; Llama 3 and Mistral trim it
            let want = if t == ChatTemplate::ChatMl {
                " ok "
            } else {
                "ok"
            };
            assert_eq!(&block[head.len()..block.len() - tail.len()], want, "{t}");
        }
    }

    #[test]
    fn families_and_names() {
        assert_eq!(
            ChatTemplate::for_family(Some("qwen3")),
            ChatTemplate::ChatMl
        );
        assert_eq!(
            ChatTemplate::for_family(Some("llama3")),
            ChatTemplate::Llama3
        );
        assert_eq!(
            ChatTemplate::for_family(Some("mistral")),
            ChatTemplate::Mistral
        );
        assert_eq!(ChatTemplate::for_family(None), ChatTemplate::ChatMl);
        assert_eq!("Llama3".parse::<ChatTemplate>(), Ok(ChatTemplate::Llama3));
        assert!("jinja"
            .parse::<ChatTemplate>()
            .unwrap_err()
            .contains("chatml"));
    }
}
