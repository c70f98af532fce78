//! Token ids as text, for servers that take no token-id prompts (llama.cpp's and
//! llama-cpp-python's servers, for example): each token id becomes one word of a fixed list,
//! chosen by a hash of the id, with a leading space. Equal token prefixes give equal text
//! prefixes, so a trace's prefix sharing survives; and every word of the list, with its leading
//! space, is a single token in OpenAI's o200k_base and cl100k_base vocabularies (a test checks
//! o200k_base), whose pre-tokenizer splits text at exactly these word boundaries, so such a
//! server (and the Llama 3 and Qwen families, which split the same way) sees as many prompt
//! tokens as we counted. With other vocabularies the count is close, not exact: the server's
//! `usage` is what the records report when it sends it.
//!
//! The list: the first 512 tokens of o200k_base by rank that are a space and 3-8 lowercase
//! ASCII letters and also one token in cl100k_base (made once with `tiktoken-rs`).

use inferencelab_trace::rng::splitmix64;

/// The text of the token ids `ids`.
pub fn text_of(ids: &[u32]) -> String {
    let mut s = String::with_capacity(ids.len() * 6);
    for &id in ids {
        s.push(' ');
        s.push_str(WORDS[(splitmix64(id as u64) % WORDS.len() as u64) as usize]);
    }
    s
}

/// 512 words, each one token with a leading space in o200k_base and cl100k_base.
pub const WORDS: [&str; 512] = [
    "the", "and", "for", "con", "pro", "com", "you", "with", "that", "this", "are", "from", "new",
    "return", "not", "your", "que", "can", "was", "int", "have", "par", "res", "get", "all", "des",
    "will", "class", "public", "per", "dis", "cont", "out", "und", "has", "man", "pre", "but",
    "est", "set", "more", "var", "str", "inter", "col", "part", "one", "void", "they", "const",
    "our", "their", "comp", "self", "app", "def", "time", "any", "over", "die", "about", "del",
    "stat", "work", "function", "which", "ent", "add", "van", "use", "else", "para", "also", "who",
    "der", "his", "some", "data", "ver", "private", "pos", "null", "acc", "when", "end", "other",
    "off", "year", "like", "name", "need", "reg", "just", "act", "org", "ser", "her", "been",
    "may", "les", "true", "min", "een", "there", "rec", "them", "real", "che", "por", "ind", "hel",
    "comm", "los", "what", "bet", "met", "value", "het", "had", "val", "cons", "med", "det",
    "would", "false", "type", "how", "dif", "were", "into", "sur", "cre", "make", "result", "rel",
    "loc", "sub", "java", "list", "than", "first", "import", "tem", "back", "start", "ein", "only",
    "its", "fil", "string", "inform", "form", "look", "let", "static", "best", "under", "trans",
    "most", "find", "person", "help", "rem", "people", "car", "ass", "want", "don", "long", "inst",
    "final", "arr", "read", "test", "every", "spec", "should", "know", "mon", "she", "well",
    "pres", "sch", "den", "exper", "som", "hand", "mod", "dat", "then", "through", "pol", "user",
    "char", "inv", "opt", "require", "sim", "right", "pass", "stud", "very", "these", "web", "dec",
    "sol", "product", "case", "good", "mak", "cor", "vis", "bel", "prof", "dur", "down", "bus",
    "where", "two", "see", "post", "att", "pour", "aut", "high", "after", "ext", "even", "now",
    "art", "eff", "men", "una", "file", "sup", "mark", "many", "las", "cal", "way", "much", "dem",
    "could", "while", "said", "used", "try", "fam", "number", "serv", "years", "event", "here",
    "play", "cas", "print", "fin", "key", "log", "comple", "day", "item", "differ", "pas", "last",
    "sin", "tak", "program", "word", "includ", "text", "current", "great", "ins", "gener", "does",
    "sign", "because", "home", "such", "free", "did", "before", "num", "process", "provid",
    "online", "voor", "take", "ste", "own", "child", "view", "cap", "das", "break", "arg", "top",
    "size", "sit", "show", "model", "using", "design", "sal", "check", "world", "week", "son",
    "book", "him", "mit", "think", "business", "tot", "again", "system", "call", "prote", "cent",
    "point", "produ", "being", "rep", "mat", "made", "each", "poss", "run", "une", "place", "qual",
    "cle", "soc", "found", "open", "ist", "support", "create", "pat", "como", "super", "line",
    "cho", "partic", "order", "service", "develop", "contin", "method", "custom", "quest", "state",
    "next", "life", "request", "those", "eas", "follow", "care", "vol", "array", "oper", "prov",
    "beg", "expect", "mov", "dans", "mar", "organ", "same", "coun", "intern", "local", "site",
    "rece", "proble", "style", "ref", "really", "pop", "writ", "sem", "ide", "main", "net", "pay",
    "qui", "default", "exp", "commun", "equ", "must", "dan", "von", "game", "conf", "object",
    "direct", "fun", "dep", "fact", "hab", "around", "rest", "between", "cour", "ret", "wer",
    "old", "say", "non", "mais", "market", "term", "error", "cert", "android", "mus", "still",
    "ang", "plus", "auf", "without", "month", "mas", "disc", "offer", "err", "going", "both",
    "ben", "project", "max", "put", "page", "report", "build", "uma", "incre", "happ", "ann",
    "love", "leg", "client", "seg", "come", "ter", "als", "std", "color", "fri", "cost", "second",
    "content", "too", "path", "eng", "few", "hist", "port", "aan", "lim", "full", "appro", "pod",
    "access", "effect", "kan", "company", "message", "stand", "spe", "head", "feel", "kom", "pot",
    "zijn", "level", "document", "team", "mill", "enc", "bas", "mem", "health", "sure", "invest",
    "field", "lot", "imp", "things", "mag", "small", "table", "iss", "won", "sex", "mom",
    "protect", "response", "always", "consider", "present", "change", "ans", "perform", "job",
    "range", "during", "keep", "review",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_prefixes_give_equal_text_prefixes() {
        let a = text_of(&[1, 2, 3, 4]);
        let b = text_of(&[1, 2, 3, 9]);
        let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        assert!(a.starts_with(&text_of(&[1, 2, 3])));
        assert!(common >= text_of(&[1, 2, 3]).len());
        assert_eq!(text_of(&[1, 2, 3, 4]).split(' ').count(), 5);
        let distinct: std::collections::HashSet<_> = WORDS.iter().collect();
        assert_eq!(distinct.len(), WORDS.len());
    }
}
