//! An incremental Server-Sent Events parser (WHATWG HTML "event stream interpretation"):
//! bytes arrive in arbitrary pieces (an event may be split across reads, several events may
//! share one read); lines end in LF, CRLF or CR; a blank line ends an event; lines starting with
//! `:` are comments (keep-alive pings); `data:` lines (one optional space after the colon) are
//! joined with LF. Other fields (`event`, `id`, `retry`) are ignored: OpenAI-style streams only
//! use `data`. At the end of the stream, a pending event without its blank line is still
//! delivered (vLLM's client accepts such a last message too).

/// One parsed event: its data, and the index of the input piece that completed it (so the
/// caller can stamp it with that piece's arrival time).
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The previous piece ended with CR: a following LF belongs to the same line end.
    after_cr: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one piece of the body; every event it completes is passed to `on_event`.
    pub fn feed(&mut self, mut bytes: &[u8], on_event: &mut impl FnMut(&[u8])) {
        if self.after_cr {
            self.after_cr = false;
            if let Some(b'\n') = bytes.first() {
                bytes = &bytes[1..];
            }
        }
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, rest) = bytes.split_at(pos);
            let cr = rest[0] == b'\r';
            let mut rest = &rest[1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    _ => {}
                }
            }
            if self.line.is_empty() {
                self.line_done(head, on_event);
            } else {
                self.line.extend_from_slice(head);
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, on_event);
                self.line = line;
                self.line.clear();
            }
            bytes = rest;
        }
        self.line.extend_from_slice(bytes);
    }

    /// The stream ended: deliver a last event that lacked its blank line.
    pub fn finish(&mut self, on_event: &mut impl FnMut(&[u8])) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, on_event);
        }
        self.dispatch(on_event);
    }

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8])) {
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            return; // comment
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(&[u8])) {
        if self.has_data {
            on_event(&self.data);
        }
        self.data.clear();
        self.has_data = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(pieces: &[&[u8]]) -> Vec<String> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let mut push = |e: &[u8]| out.push(String::from_utf8(e.to_vec()).unwrap());
        for piece in pieces {
            p.feed(piece, &mut push);
        }
        p.finish(&mut push);
        out
    }

    #[test]
    fn whole_events_comments_and_done() {
        let s = b": ping\n\ndata: {\"a\":1}\n\ndata: [DONE]\n\n";
        assert_eq!(events(&[s]), vec!["{\"a\":1}", "[DONE]"]);
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let s: &[u8] = b"data: {\"x\": \"h\xc3\xa9\"}\r\n\r\n:keep-alive\r\ndata:{\"y\":2}\n\ndata: a\ndata: b\r\rdata: [DONE]\n\n";
        let want = vec!["{\"x\": \"h\u{e9}\"}", "{\"y\":2}", "a\nb", "[DONE]"];
        for i in 0..s.len() {
            for j in i..s.len() {
                assert_eq!(events(&[&s[..i], &s[i..j], &s[j..]]), want, "split {i} {j}");
            }
        }
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(events(&bytes), want);
    }

    #[test]
    fn last_event_without_blank_line_is_delivered() {
        assert_eq!(events(&[b"data: [DONE]"]), vec!["[DONE]"]);
        assert_eq!(events(&[b"data: x\n"]), vec!["x"]);
        assert!(events(&[b": only a comment"]).is_empty());
    }
}
