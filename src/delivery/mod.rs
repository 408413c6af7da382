//! Sending replies back through the platforms: the send clients, what their answers mean
//! ([`classify`]), splitting long texts to the platforms' limits, and the ledger of parts sent
//! and sends per second that delivery keeps in Redis.

mod classify;
mod ledger;
pub(crate) mod send;

/// Split a reply into parts of at most `limit` characters, at whitespace where one is near the
/// end of a part, so no word is cut unless a single word is longer than the limit.
pub fn split_text(text: &str, limit: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while rest.chars().count() > limit {
        let cut = rest.char_indices().nth(limit).map(|(i, _)| i).unwrap_or(rest.len());
        let head = &rest[..cut];
        let at = head.rfind(char::is_whitespace).filter(|&i| i > cut / 2).unwrap_or(cut);
        parts.push(rest[..at].trim_end().to_string());
        rest = rest[at..].trim_start();
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest.to_string());
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::split_text;

    #[test]
    fn short_texts_stay_whole() {
        assert_eq!(split_text("hello", 2000), vec!["hello"]);
    }

    #[test]
    fn long_texts_split_at_words_within_the_limit() {
        let word = "palabra ";
        let text = word.repeat(600); // 4800 characters
        let parts = split_text(&text, 2000);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.chars().count() <= 2000 && !p.starts_with(' ') && p.ends_with("palabra")));
        assert_eq!(parts.join(" "), text.trim());
    }

    #[test]
    fn counts_characters_not_bytes() {
        let text = "é".repeat(2500);
        let parts = split_text(&text, 2000);
        assert_eq!(parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>(), vec![2000, 500]);
    }
}
