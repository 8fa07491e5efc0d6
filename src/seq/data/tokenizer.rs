//! Text to token ids: lowercase, split on every character that is not a letter or a digit,
//! and a vocabulary of the most frequent words (Keras' `Tokenizer(num_words=V)` with its
//! default filters, for plain text).
//!
//! Ids: 0 = padding, 1 = unknown word, 2 … V−1 = the V − 2 most frequent words of the texts
//! the vocabulary is built from (ties broken alphabetically, so the result depends only on
//! the texts). So a vocabulary "of size V" needs exactly V embedding rows.

use super::{PAD, UNK};
use std::collections::HashMap;

/// The words of `text`: lowercased, split on non-alphanumeric characters (Unicode-aware), no
/// empty words.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A word ↔ id table.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocabulary {
    /// `words[id]`; `words[0]` = `"<pad>"`, `words[1]` = `"<unk>"`.
    pub words: Vec<String>,
    index: HashMap<String, u32>,
}

impl Vocabulary {
    /// The `size` − 2 most frequent words of `texts` (each a list of words), plus padding and
    /// unknown. `size` ≥ 2.
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a [String]>, size: usize) -> Vocabulary {
        assert!(
            size >= 2,
            "a vocabulary needs at least the padding and unknown ids"
        );
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for text in texts {
            for w in text {
                *counts.entry(w.as_str()).or_default() += 1;
            }
        }
        let mut by_count: Vec<(&str, usize)> = counts.into_iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let words: Vec<String> = ["<pad>", "<unk>"]
            .into_iter()
            .chain(by_count.into_iter().map(|(w, _)| w))
            .take(size)
            .map(String::from)
            .collect();
        Vocabulary::from_words(words)
    }

    /// A vocabulary from its word list (`words[0]` and `words[1]` are the padding and unknown
    /// placeholders), e.g. as read back from `vocab.txt`.
    pub fn from_words(words: Vec<String>) -> Vocabulary {
        let index = words
            .iter()
            .enumerate()
            .skip(2)
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        Vocabulary { words, index }
    }

    /// Number of ids (padding and unknown included).
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True if only the two reserved ids exist.
    pub fn is_empty(&self) -> bool {
        self.words.len() <= 2
    }

    /// The ids of `words` ([`UNK`] for words not in the vocabulary).
    pub fn encode(&self, words: &[String]) -> Vec<u32> {
        words
            .iter()
            .map(|w| self.index.get(w).copied().unwrap_or(UNK))
            .collect()
    }

    /// The word of an id (`"<pad>"` for [`PAD`]).
    pub fn word(&self, id: u32) -> &str {
        self.words.get(id as usize).map_or(
            "<unk>",
            |w| {
                if id == PAD { "<pad>" } else { w.as_str() }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_lowercases_and_splits_on_non_alphanumerics() {
        assert_eq!(
            tokenize("It's GREAT -- 10/10, très bien!"),
            vec!["it", "s", "great", "10", "10", "très", "bien"]
        );
        assert!(tokenize(" ,;- ").is_empty());
    }

    #[test]
    fn vocabulary_keeps_the_most_frequent_words() {
        let texts: Vec<Vec<String>> = ["b a c a", "c a d"].iter().map(|t| tokenize(t)).collect();
        // counts: a 3, c 2, b 1, d 1 → size 4 keeps <pad>, <unk>, a, c
        let v = Vocabulary::build(texts.iter().map(|t| t.as_slice()), 4);
        assert_eq!(v.words, vec!["<pad>", "<unk>", "a", "c"]);
        assert_eq!(v.encode(&tokenize("A b C")), vec![2, 1, 3]);
        assert_eq!((v.word(0), v.word(3)), ("<pad>", "c"));
        // ties are broken alphabetically: b before d
        let v = Vocabulary::build(texts.iter().map(|t| t.as_slice()), 100);
        assert_eq!(v.words, vec!["<pad>", "<unk>", "a", "c", "b", "d"]);
    }
}
