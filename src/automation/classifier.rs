//! The built-in intent classifier: character n-gram TF-IDF vectors compared by cosine.
//!
//! Trained once at start-up from the intents' example phrases; no network, no model file.
//! Text is normalised first ([`normalize`]: lower case, Latin accents folded, anything that is
//! not a letter or digit becomes a space), then each word, padded with spaces, gives its
//! character 3- and 4-grams and the word itself. N-grams make it tolerant of typos and
//! inflections ("ordr", "pedido"/"pedidos") and need no per-language tokenizer, so examples in
//! several languages live in one model.
//!
//! Invariants: vectors are L2-normalised and sorted by feature, so a cosine is one merge of two
//! slices; features seen in no training text still count in a query's norm (with the highest
//! idf), so a text sharing little with every example scores low rather than being inflated by
//! the few n-grams it shares. A score is within 0..=1.

use std::collections::HashMap;

/// A sparse, L2-normalised vector: (feature hash, weight), sorted by feature.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vector(Vec<(u64, f32)>);

impl Vector {
    /// Cosine similarity of two normalised vectors.
    pub fn cosine(&self, other: &Vector) -> f32 {
        let (a, b) = (&self.0, &other.0);
        let (mut i, mut j, mut dot) = (0, 0, 0.0f32);
        while i < a.len() && j < b.len() {
            match a[i].0.cmp(&b[j].0) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    dot += a[i].1 * b[j].1;
                    i += 1;
                    j += 1;
                }
            }
        }
        dot.clamp(0.0, 1.0)
    }
}

/// Lower case, common Latin accents folded, every other non-alphanumeric character a space,
/// runs of spaces collapsed.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = true;
    for c in text.chars().flat_map(char::to_lowercase) {
        let c = fold(c);
        if c.is_alphanumeric() {
            out.push(c);
            space = false;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

fn fold(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
        'ç' => 'c',
        'è' | 'é' | 'ê' | 'ë' => 'e',
        'ì' | 'í' | 'î' | 'ï' => 'i',
        'ñ' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' => 'o',
        'ù' | 'ú' | 'û' | 'ü' => 'u',
        'ý' | 'ÿ' => 'y',
        'ß' => 's',
        _ => c,
    }
}

/// FNV-1a: stable across runs and platforms (the model is rebuilt at each start anyway).
fn hash(kind: u8, s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(kind).chain(s.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The raw feature counts of a text.
fn features(text: &str) -> HashMap<u64, u32> {
    let mut out = HashMap::new();
    for word in normalize(text).split(' ').filter(|w| !w.is_empty()) {
        *out.entry(hash(b'w', word)).or_insert(0) += 1;
        let padded: Vec<char> = std::iter::once(' ')
            .chain(word.chars())
            .chain(std::iter::once(' '))
            .collect();
        for n in 3..=4 {
            for gram in padded.windows(n) {
                let g: String = gram.iter().collect();
                *out.entry(hash(b'c', &g)).or_insert(0) += 1;
            }
        }
    }
    out
}

/// The inverse document frequencies learned from a corpus.
#[derive(Debug, Clone, Default)]
pub struct Vectorizer {
    idf: HashMap<u64, f32>,
    /// The idf of a feature no training text had.
    unseen: f32,
}

impl Vectorizer {
    pub fn fit<'a>(docs: impl IntoIterator<Item = &'a str>) -> Self {
        let mut df: HashMap<u64, u32> = HashMap::new();
        let mut n = 0u32;
        for d in docs {
            n += 1;
            for f in features(d).into_keys() {
                *df.entry(f).or_insert(0) += 1;
            }
        }
        let idf_of = |df: u32| ((1.0 + n as f32) / (1.0 + df as f32)).ln() + 1.0;
        Self {
            idf: df.into_iter().map(|(f, d)| (f, idf_of(d))).collect(),
            unseen: idf_of(0),
        }
    }

    pub fn vector(&self, text: &str) -> Vector {
        let mut v: Vec<(u64, f32)> = features(text)
            .into_iter()
            .map(|(f, tf)| {
                let idf = self.idf.get(&f).copied().unwrap_or(self.unseen);
                (f, (1.0 + (tf as f32).ln()) * idf)
            })
            .collect();
        let norm = v.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
        if norm > 0.0 {
            for (_, w) in &mut v {
                *w /= norm;
            }
        }
        v.sort_unstable_by_key(|(f, _)| *f);
        Vector(v)
    }
}

/// The detected intent and how sure the classifier is (0..=1).
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    pub intent: String,
    pub confidence: f32,
}

/// Nearest-example classifier: an intent scores the best cosine of any of its examples.
#[derive(Debug, Clone)]
pub struct Classifier {
    vectorizer: Vectorizer,
    /// (intent index, example vector).
    examples: Vec<(usize, Vector)>,
    intents: Vec<String>,
}

impl Classifier {
    /// `intents`: (id, examples). Blank examples are skipped.
    pub fn train(intents: &[(String, Vec<String>)]) -> Self {
        let texts = || {
            intents
                .iter()
                .flat_map(|(_, ex)| ex.iter().map(String::as_str))
                .filter(|e| !e.trim().is_empty())
        };
        let vectorizer = Vectorizer::fit(texts());
        let examples = intents
            .iter()
            .enumerate()
            .flat_map(|(i, (_, ex))| {
                ex.iter()
                    .filter(|e| !e.trim().is_empty())
                    .map(move |e| (i, e))
            })
            .map(|(i, e)| (i, vectorizer.vector(e)))
            .collect();
        Self {
            vectorizer,
            examples,
            intents: intents.iter().map(|(id, _)| id.clone()).collect(),
        }
    }

    /// The best intent for `text`, or None when it shares nothing with any example.
    pub fn classify(&self, text: &str) -> Option<Classified> {
        let q = self.vectorizer.vector(text);
        let mut best = vec![0.0f32; self.intents.len()];
        for (i, v) in &self.examples {
            best[*i] = best[*i].max(q.cosine(v));
        }
        let (i, score) = best.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
        (*score > 0.0).then(|| Classified {
            intent: self.intents[i].clone(),
            confidence: *score,
        })
    }
}

/// Retrieval over the knowledge base: the question most similar to the text.
#[derive(Debug, Clone)]
pub struct Knowledge {
    vectorizer: Vectorizer,
    questions: Vec<Vector>,
}

impl Knowledge {
    pub fn build(questions: &[&str]) -> Self {
        let vectorizer = Vectorizer::fit(questions.iter().copied());
        let questions = questions.iter().map(|q| vectorizer.vector(q)).collect();
        Self {
            vectorizer,
            questions,
        }
    }

    /// (index of the best question, similarity), if there is any question.
    pub fn best(&self, text: &str) -> Option<(usize, f32)> {
        let q = self.vectorizer.vector(text);
        self.questions
            .iter()
            .enumerate()
            .map(|(i, v)| (i, q.cosine(v)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Classifier {
        let intents = [
            (
                "order_status",
                vec![
                    "where is my order",
                    "track my package",
                    "dónde está mi pedido",
                ],
            ),
            (
                "refund",
                vec![
                    "I want a refund",
                    "give me my money back",
                    "quiero un reembolso",
                ],
            ),
            ("greeting", vec!["hello", "hi there", "hola buenos días"]),
        ];
        Classifier::train(
            &intents.map(|(id, ex)| (id.to_string(), ex.into_iter().map(String::from).collect())),
        )
    }

    #[test]
    fn normalises_case_accents_and_punctuation() {
        assert_eq!(
            normalize("  ¿Dónde ESTÁ mi pedido?!  "),
            "donde esta mi pedido"
        );
        assert_eq!(normalize("Straße, 12345"), "strase 12345");
        assert_eq!(normalize("..."), "");
    }

    #[test]
    fn an_example_itself_is_recognised_with_full_confidence() {
        let c = model().classify("where is my order").unwrap();
        assert_eq!(c.intent, "order_status");
        assert!(c.confidence > 0.99, "{c:?}");
    }

    #[test]
    fn typos_and_other_wordings_still_find_the_intent() {
        let m = model();
        for (text, want) in [
            ("wher is my ordr 12345", "order_status"),
            ("donde esta mi pedidoo", "order_status"),
            ("i want my mony back", "refund"),
            ("reembolso por favor", "refund"),
            ("helo", "greeting"),
        ] {
            let c = m
                .classify(text)
                .unwrap_or_else(|| panic!("nothing for {text:?}"));
            assert_eq!(c.intent, want, "{text:?}: {c:?}");
        }
    }

    #[test]
    fn unrelated_text_has_low_confidence() {
        let c = model().classify("xylophone quantum zebra");
        assert!(c.as_ref().is_none_or(|c| c.confidence < 0.2), "{c:?}");
        assert_eq!(model().classify(""), None);
    }

    #[test]
    fn knowledge_finds_the_closest_question() {
        let k = Knowledge::build(&["what are your opening hours", "do you ship abroad"]);
        let (i, s) = k.best("whats your opening hour").unwrap();
        assert_eq!(i, 0);
        assert!(s > 0.5, "{s}");
        let (_, s) = k.best("banana").unwrap();
        assert!(s < 0.2, "{s}");
    }
}
