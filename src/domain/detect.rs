//! What a conversation's routing can learn from the customer and the text: the country of a
//! phone number and the language of a message.
//!
//! Invariants: both are pure, bounded in cost (at most [`LANGUAGE_SAMPLE_CHARS`] characters are
//! looked at, a number is at most 15 digits) and never panic on input; both answer `None` rather
//! than guess (a wrong language team is worse than falling through to a later rule), and only
//! ever produce codes that [`is_region`] and [`supported_languages`] accept, so a routing rule
//! naming anything else can be refused when it is compiled.

use whatlang::Lang;

/// Language detection only looks at this many leading characters: it keeps
/// the cost per message bounded and a message's opening is representative.
pub const LANGUAGE_SAMPLE_CHARS: usize = 2_000;

/// Whatlang's own "reliable" bar. Above it we trust the result regardless of
/// length (this is what single-script languages like Greek or Korean, and
/// longer messages, reach).
const LANGUAGE_RELIABLE_CONFIDENCE: f64 = 0.9;

/// Below the reliable bar we still accept a detection if the text has at least
/// this many words and this confidence. Calibrated on short customer-service
/// messages: single words and two-word greetings are wrong about as often as
/// right, and under ~0.15 the pick is frequently a neighbouring language
/// (es/pt, de/nl/af). Misrouting to the wrong language team is worse than
/// falling through to a later rule, so this errs towards "unknown".
const LANGUAGE_MIN_WORDS: usize = 3;
const LANGUAGE_MIN_CONFIDENCE: f64 = 0.15;

/// ISO 3166-1 alpha-2 region of a wa_id ("4915112345678" → Some("DE")), via
/// phonenumber with a leading '+'.
///
/// `None` for anything that is not 1–15 ASCII digits (E.164's maximum, and it
/// keeps arbitrary input away from the parser), for unparsable numbers, and
/// for numbers phonenumber cannot attribute to a single region (e.g. a +1
/// number outside every NANP region's ranges, or non-geographic codes).
///
/// A customer known only by its business-scoped user id (`US.13491208655302741918`: Meta's
/// BSUIDs start with the user's ISO 3166 alpha-2 country and a dot) has that country.
pub fn country_of(wa_id: &str) -> Option<String> {
    if let Some(country) = super::customer::user_id_country(wa_id) {
        return Some(country.to_string());
    }
    let digits = wa_id.strip_prefix('+').unwrap_or(wa_id);
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = phonenumber::parse(None, format!("+{digits}")).ok()?;
    let id = number.country().id()?;
    Some(id.as_ref().to_owned())
}

/// ISO 639-1 code of the text's language via whatlang; None when no text or
/// nothing detected with enough confidence (see the `LANGUAGE_*` constants).
pub fn language_of(text: &str) -> Option<&'static str> {
    let sample = match text.char_indices().nth(LANGUAGE_SAMPLE_CHARS) {
        Some((end, _)) => text.get(..end).unwrap_or(text),
        None => text,
    };
    let info = whatlang::detect(sample)?;
    let confidence = info.confidence();
    let accepted = confidence > LANGUAGE_RELIABLE_CONFIDENCE
        || (confidence >= LANGUAGE_MIN_CONFIDENCE && word_count(sample) >= LANGUAGE_MIN_WORDS);
    accepted.then(|| iso639_1(info.lang()))
}

/// Words in the sense of "runs of letters/digits containing a letter", so
/// order numbers and emoji don't make a text look longer than it reads.
fn word_count(text: &str) -> usize {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().any(char::is_alphabetic))
        .count()
}

/// ISO 639-1 code for each whatlang language. Exhaustive on purpose: a
/// whatlang upgrade that adds languages must fail to compile here rather than
/// silently produce codes the config validation doesn't know.
fn iso639_1(lang: Lang) -> &'static str {
    match lang {
        Lang::Epo => "eo",
        Lang::Eng => "en",
        Lang::Rus => "ru",
        Lang::Cmn => "zh",
        Lang::Spa => "es",
        Lang::Por => "pt",
        Lang::Ita => "it",
        Lang::Ben => "bn",
        Lang::Fra => "fr",
        Lang::Deu => "de",
        Lang::Ukr => "uk",
        Lang::Kat => "ka",
        Lang::Ara => "ar",
        Lang::Hin => "hi",
        Lang::Jpn => "ja",
        Lang::Heb => "he",
        Lang::Yid => "yi",
        Lang::Pol => "pl",
        Lang::Amh => "am",
        Lang::Jav => "jv",
        Lang::Kor => "ko",
        Lang::Nob => "nb",
        Lang::Dan => "da",
        Lang::Swe => "sv",
        Lang::Fin => "fi",
        Lang::Tur => "tr",
        Lang::Nld => "nl",
        Lang::Hun => "hu",
        Lang::Ces => "cs",
        Lang::Ell => "el",
        Lang::Bul => "bg",
        Lang::Bel => "be",
        Lang::Mar => "mr",
        Lang::Kan => "kn",
        Lang::Ron => "ro",
        Lang::Slv => "sl",
        Lang::Hrv => "hr",
        Lang::Srp => "sr",
        Lang::Mkd => "mk",
        Lang::Lit => "lt",
        Lang::Lav => "lv",
        Lang::Est => "et",
        Lang::Tam => "ta",
        Lang::Vie => "vi",
        Lang::Urd => "ur",
        Lang::Tha => "th",
        Lang::Guj => "gu",
        Lang::Uzb => "uz",
        Lang::Pan => "pa",
        Lang::Aze => "az",
        Lang::Ind => "id",
        Lang::Tel => "te",
        Lang::Pes => "fa",
        Lang::Mal => "ml",
        Lang::Ori => "or",
        Lang::Mya => "my",
        Lang::Nep => "ne",
        Lang::Sin => "si",
        Lang::Khm => "km",
        Lang::Tuk => "tk",
        Lang::Aka => "ak",
        Lang::Zul => "zu",
        Lang::Sna => "sn",
        Lang::Afr => "af",
        Lang::Lat => "la",
        Lang::Slk => "sk",
        Lang::Cat => "ca",
        Lang::Tgl => "tl",
        Lang::Hye => "hy",
    }
}

/// The ISO 639-1 codes [`language_of`] can return, sorted.
pub fn supported_languages() -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = Lang::all().iter().map(|l| iso639_1(*l)).collect();
    codes.sort_unstable();
    codes
}

/// Whether `code` (ISO 3166-1 alpha-2, upper case) is a region with phone numbers, i.e. one
/// [`country_of`] can produce.
pub fn is_region(code: &str) -> bool {
    phonenumber::metadata::DATABASE.by_id(code).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DE_TEXT: &str = "Hallo, wo ist meine Bestellung? Ich warte seit einer Woche.";
    const ES_TEXT: &str =
        "Hola, hice un pedido la semana pasada y todavía no ha llegado. ¿Pueden revisarlo?";
    const EN_TEXT: &str =
        "Hi, I ordered a jacket last week and it still hasn't arrived. Can you check?";

    #[test]
    fn country_of_known_numbers() {
        assert_eq!(country_of("4915112345678").as_deref(), Some("DE"));
        assert_eq!(country_of("436641234567").as_deref(), Some("AT"));
        assert_eq!(country_of("14155550123").as_deref(), Some("US"));
        assert_eq!(country_of("919876543210").as_deref(), Some("IN"));
        assert_eq!(country_of("5511987654321").as_deref(), Some("BR"));
        assert_eq!(country_of("447400123456").as_deref(), Some("GB"));
        assert_eq!(country_of("12505550123").as_deref(), Some("CA"));
        assert_eq!(country_of("+4915112345678").as_deref(), Some("DE"));
        assert_eq!(country_of("AT.13491208655302741918").as_deref(), Some("AT"));
        assert_eq!(
            country_of("US.ENT.11815799212886844830").as_deref(),
            Some("US")
        );
    }

    #[test]
    fn country_of_garbage_is_none() {
        for wa_id in [
            "",
            "abc",
            "+",
            "1",
            "999999",
            "49 151 12345678",
            "4915112345678x",
            "1234567890123456789",
            "٤٩١٥١١٢٣٤٥٦٧٨",
        ] {
            assert_eq!(country_of(wa_id), None, "{wa_id:?}");
        }
    }

    #[test]
    fn country_of_never_panics_on_digit_strings() {
        for prefix in 0..1000u32 {
            for len in [0usize, 3, 7, 10, 12] {
                let wa_id = format!("{prefix}{}", "9876543210123".get(..len).unwrap());
                let _ = country_of(&wa_id);
            }
        }
    }

    #[test]
    fn language_of_sentences() {
        assert_eq!(language_of(DE_TEXT), Some("de"));
        assert_eq!(language_of(ES_TEXT), Some("es"));
        assert_eq!(language_of(EN_TEXT), Some("en"));
        assert_eq!(
            language_of("Hello, where is my order? I have been waiting for a week."),
            Some("en")
        );
        assert_eq!(language_of("我的订单在哪里"), Some("zh"));
    }

    #[test]
    fn language_of_too_little_text_is_none() {
        for text in [
            "",
            "ok",
            "hi",
            "thanks",
            "price",
            "👍",
            "12345",
            "Guten Morgen",
        ] {
            assert_eq!(language_of(text), None, "{text:?}");
        }
    }

    #[test]
    fn language_of_long_text_is_bounded_and_safe() {
        let long = DE_TEXT.repeat(2_000);
        assert_eq!(language_of(&long), Some("de"));
    }

    #[test]
    fn every_whatlang_language_has_a_distinct_code() {
        let codes = supported_languages();
        assert_eq!(codes.len(), Lang::all().len());
        let mut deduped = codes.clone();
        deduped.dedup();
        assert_eq!(deduped, codes);
        let two_lowercase_letters =
            |c: &&str| c.len() == 2 && c.bytes().all(|b| b.is_ascii_lowercase());
        assert!(codes.iter().all(two_lowercase_letters));
    }

    #[test]
    fn regions_are_those_numbers_come_from() {
        assert!(is_region("DE") && is_region("GB"));
        assert!(!is_region("UK") && !is_region("XX"));
    }
}
