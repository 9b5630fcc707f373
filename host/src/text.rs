//! Text that came from outside the host's control (a strategy's log lines, progress phases,
//! summaries and errors; names it passes) on its way to a terminal, a log file, the run
//! history or a report.
//!
//! Contract: everything a guest makes the host print or store goes through [`clean`] once,
//! where it enters the host. The result is one line with no control character, so a
//! strategy can neither drive the operator's terminal (escape sequences: clear screen,
//! window title, hyperlinks) nor forge log records (newlines), and it is bounded, so it
//! can neither fill the disk nor the host's memory.

use std::fmt::Write;

/// Marks where [`clean`] cut a text; followed by how many bytes were cut.
pub const TRUNCATED: &str = "...[truncated";

/// `text` as one printable line of at most `max_chars` characters of the original plus a
/// truncation marker: newline, carriage return and tab become `\n`, `\r`, `\t`; every other
/// control character (C0, DEL, C1, which includes ESC and CSI) and every character that
/// reorders or breaks lines on a terminal (bidirectional overrides and isolates, line and
/// paragraph separators) becomes `\u{..}`.
pub fn clean(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars) + 16);
    for (kept, (at, c)) in text.char_indices().enumerate() {
        if kept == max_chars {
            let _ = write!(out, "{TRUNCATED} {} bytes]", text.len() - at);
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// An error and its chain of causes, `: `-separated (a client's error says little
/// without the I/O error under it).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// The first [`NAME_CHARS`] characters of a name, cleaned, for an error message: the error
/// stays readable however long the name a strategy passed.
pub fn name(text: &str) -> String {
    clean(text, NAME_CHARS)
}

/// How much of a name an error message shows.
pub const NAME_CHARS: usize = 128;

fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_newlines_never_pass() {
        let hostile = "ok\x1b[2J\x1b]0;owned\x07\nERROR forged\r\u{9b}31m\u{202e}txt\ttab";
        let out = clean(hostile, 1000);
        assert_eq!(
            out,
            "ok\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\nERROR forged\\r\\u{9b}31m\\u{202e}txt\\ttab"
        );
        assert!(out.chars().all(|c| !c.is_control()));
    }

    #[test]
    fn long_text_is_cut_with_a_marker_that_says_how_much() {
        let out = clean(&"é".repeat(10), 4);
        assert_eq!(out, "éééé...[truncated 12 bytes]");
        assert_eq!(clean("short", 5), "short");
        assert_eq!(name(&"x".repeat(1 << 20)).len(), NAME_CHARS + 28);
    }

    #[test]
    fn plain_text_is_unchanged() {
        let text = "loaded 10 rows into \"analytics\".\"orders\" — ünïcode ok";
        assert_eq!(clean(text, 4096), text);
    }
}
