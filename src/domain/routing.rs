//! Routing rules: decide which team (and optionally which priority and
//! labels) a conversation gets, from the `[[routing.rules]]` config.
//!
//! Rules are evaluated in config order when a conversation receives its first
//! message and when it is reopened; the first rule whose `when` matches wins
//! and its `then` is applied. No match means "leave routing to the caller's
//! default".
//!
//! Invariants:
//! - A [`RuleSet`] only exists in validated form: [`RuleSet::compile`] is the
//!   sole constructor besides [`RuleSet::empty`], so every team a rule refers
//!   to existed at compile time, every regex compiled within a size limit,
//!   every country/language code is one the detectors can actually produce
//!   (a rule that could never match is a config mistake, not a silent no-op),
//!   and every rule changes something (non-empty `then`). Two combinations
//!   that cannot match are accepted and reported by [`RuleSet::warnings`]
//!   instead, because the contract's own example uses them: `within_hours_of`
//!   and `outside_hours_of` naming the same team, and `intent` without
//!   `[automation]` (nothing detects intents then) or naming an intent that
//!   `[automation]` does not configure.
//! - `intent` is the caller's: the bot's detected intent when it hands a
//!   conversation over, and the built-in classifier's for the message that
//!   opens or reopens one when `[automation]` exists (see the conversation
//!   actor); None otherwise, and then no `when.intent` matches.
//! - `when` is a conjunction of its present keys; each list is a disjunction
//!   of its values. A `when` with no keys matches everything (a catch-all).
//! - Conditions that need the message text (`keywords`, `regex`, `language`)
//!   never match a message without text.
//! - Routing is pure apart from the `is_open` callback and never panics on
//!   input: country and language detection ([`super::detect`]) are computed
//!   lazily, at most once per [`RuleSet::route`] call, and only when a rule
//!   that reaches those conditions needs them, since both are much costlier
//!   than string compares.
//! - The original [`RuleConfig`]s are kept verbatim so an admin API can serve
//!   back exactly what was configured.

use std::collections::HashMap;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use super::detect::{country_of, is_region, language_of, supported_languages};
use super::Priority;

/// Upper bound for a compiled regex (user pattern or keyword set), so one
/// config line cannot make every routing decision expensive.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One `[[routing.rules]]` entry, exactly as configured.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(default)]
    pub when: WhenConfig,
    #[serde(default)]
    pub then: ThenConfig,
}

/// Conditions of a rule; every key is optional and all present keys must match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WhenConfig {
    /// ISO 3166-1 alpha-2 regions of the customer's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<Vec<String>>,
    /// ISO 639-1 codes of the message text's detected language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Vec<String>>,
    /// Case-insensitive whole-word (or adjacent-words) matches in the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keywords: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Vec<String>>,
    /// Business phone number ids the message arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_hours_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_hours_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
}

/// What a matching rule assigns.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThenConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// Why a rule was rejected. `index` is the rule's 0-based position in the
/// config list; `key` is the offending config key (e.g. `when.regex`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {index} ({name:?}): {key}: {problem}")]
pub struct RuleError {
    pub index: usize,
    pub name: String,
    pub key: String,
    pub problem: String,
}

/// What routing needs to know about the message that (re)opened a conversation.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    /// Business phone number id the message arrived on.
    pub number: &'a str,
    /// The customer as the conversation shows it: its phone (international number, digits
    /// only) when known, else its business-scoped user id (whose prefix is its country).
    pub customer: &'a str,
    pub text: Option<&'a str>,
    pub message_type: &'a str,
    pub labels: &'a [String],
    pub intent: Option<&'a str>,
    /// The business number's country (`[[numbers]] country`): `country` for a customer whose
    /// own is unknown. A customer's known country always wins.
    pub number_country: Option<&'a str>,
    /// The business number's languages (`[[numbers]] languages`): a `language` condition
    /// matches any of them when the message's own language cannot be detected.
    pub number_languages: &'a [String],
}

/// The winning rule and what it assigns.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch<'a> {
    pub rule: &'a str,
    pub team: Option<&'a str>,
    pub priority: Option<Priority>,
    pub labels: &'a [String],
}

/// Validated, compiled rules in evaluation order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    configs: Vec<RuleConfig>,
    /// Parallel to `configs`.
    compiled: Vec<CompiledWhen>,
}

/// `when` in the form matching wants: codes normalised, patterns compiled.
#[derive(Debug, Clone)]
struct CompiledWhen {
    number: Option<Vec<String>>,
    message_type: Option<Vec<String>>,
    labels: Option<Vec<String>>,
    intent: Option<Vec<String>>,
    within_hours_of: Option<String>,
    outside_hours_of: Option<String>,
    keywords: Option<Regex>,
    regex: Option<Regex>,
    country: Option<Vec<String>>,
    language: Option<Vec<&'static str>>,
}

impl RuleSet {
    /// A rule set that never matches.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Whether some rule has a `when.intent` (only then is an intent worth detecting for
    /// routing).
    pub fn uses_intent(&self) -> bool {
        self.compiled.iter().any(|w| w.intent.is_some())
    }

    /// Rules that are valid but cannot match, one line each (logged when the rules come into
    /// force, so a mistake does not go unnoticed). `intents`: the intent ids `[automation]`
    /// detects, None without automation.
    pub fn warnings(&self, intents: Option<&[&str]>) -> Vec<String> {
        let mut out = Vec::new();
        for (config, when) in self.configs.iter().zip(&self.compiled) {
            if let Some(team) = when
                .within_hours_of
                .as_ref()
                .filter(|t| when.outside_hours_of.as_ref() == Some(*t))
            {
                out.push(format!(
                    "routing rule {:?}: within_hours_of and outside_hours_of both name {team:?}; it never matches",
                    config.name
                ));
            }
            match (&when.intent, intents) {
                (None, _) => {}
                (Some(_), None) => out.push(format!(
                    "routing rule {:?}: when.intent never matches: without [automation] no intent is detected",
                    config.name
                )),
                (Some(wanted), Some(known)) => {
                    for w in wanted.iter().filter(|w| !known.contains(&w.as_str())) {
                        out.push(format!(
                            "routing rule {:?}: when.intent {w:?} is no [[automation.intents]] id; it never matches",
                            config.name
                        ));
                    }
                }
            }
        }
        out
    }

    /// Validates and compiles `rules`, reporting the first problem found.
    ///
    /// `team_exists` is consulted for `then.team`, `when.within_hours_of` and
    /// `when.outside_hours_of`.
    pub fn compile(
        rules: Vec<RuleConfig>,
        team_exists: &dyn Fn(&str) -> bool,
    ) -> Result<RuleSet, RuleError> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut compiled = Vec::with_capacity(rules.len());
        for (index, rule) in rules.iter().enumerate() {
            let ctx = Ctx {
                index,
                name: &rule.name,
            };
            if rule.name.trim().is_empty() {
                return Err(ctx.err("name", "must not be blank"));
            }
            if let Some(first) = seen.insert(rule.name.as_str(), index) {
                return Err(ctx.err(
                    "name",
                    format!("duplicate name (also used by rule {first})"),
                ));
            }
            compiled.push(compile_when(&ctx, &rule.when, team_exists)?);
            check_then(&ctx, &rule.then, team_exists)?;
        }
        Ok(RuleSet {
            configs: rules,
            compiled,
        })
    }

    /// The rules as configured (not normalised), in evaluation order.
    pub fn configs(&self) -> &[RuleConfig] {
        &self.configs
    }

    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    /// First matching rule. `is_open(team)` answers whether a team is inside
    /// its business hours now (for within_hours_of/outside_hours_of).
    pub fn route(
        &self,
        input: &RouteInput<'_>,
        is_open: &dyn Fn(&str) -> bool,
    ) -> Option<RouteMatch<'_>> {
        let mut derived = Derived::new(input);
        self.route_with(input, is_open, &mut derived)
    }

    fn route_with(
        &self,
        input: &RouteInput<'_>,
        is_open: &dyn Fn(&str) -> bool,
        derived: &mut Derived<'_>,
    ) -> Option<RouteMatch<'_>> {
        self.configs
            .iter()
            .zip(&self.compiled)
            .find(|(_, when)| when.matches(input, is_open, derived))
            .map(|(config, _)| RouteMatch {
                rule: &config.name,
                team: config.then.team.as_deref(),
                priority: config.then.priority,
                labels: &config.then.labels,
            })
    }
}

impl CompiledWhen {
    /// Cheap exact comparisons first so that the detectors only run for rules
    /// that are otherwise already matching.
    fn matches(
        &self,
        input: &RouteInput<'_>,
        is_open: &dyn Fn(&str) -> bool,
        derived: &mut Derived<'_>,
    ) -> bool {
        self.number
            .as_ref()
            .is_none_or(|numbers| contains(numbers, input.number))
            && self
                .message_type
                .as_ref()
                .is_none_or(|types| contains(types, input.message_type))
            && self
                .labels
                .as_ref()
                .is_none_or(|labels| labels.iter().any(|l| input.labels.contains(l)))
            && self
                .intent
                .as_ref()
                .is_none_or(|intents| input.intent.is_some_and(|i| contains(intents, i)))
            && self.within_hours_of.as_deref().is_none_or(is_open)
            && self
                .outside_hours_of
                .as_deref()
                .is_none_or(|team| !is_open(team))
            && self.keywords.as_ref().is_none_or(|keywords| {
                derived
                    .lowercase_text()
                    .is_some_and(|text| keywords.is_match(text))
            })
            && self
                .regex
                .as_ref()
                .is_none_or(|regex| input.text.is_some_and(|text| regex.is_match(text)))
            && self.country.as_ref().is_none_or(|countries| {
                derived
                    .country()
                    .is_some_and(|country| contains(countries, country))
            })
            && self
                .language
                .as_ref()
                .is_none_or(|languages| derived.language_in(languages))
    }
}

fn contains(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == value)
}

/// Per-`route()` memo of values derived from the input, each computed at most
/// once and only on demand.
struct Derived<'a> {
    customer: &'a str,
    text: Option<&'a str>,
    number_country: Option<&'a str>,
    number_languages: &'a [String],
    lowercase_text: Option<Option<String>>,
    country: Option<Option<String>>,
    language: Option<Option<&'static str>>,
}

impl<'a> Derived<'a> {
    fn new(input: &RouteInput<'a>) -> Self {
        Derived {
            customer: input.customer,
            text: input.text,
            number_country: input.number_country,
            number_languages: input.number_languages,
            lowercase_text: None,
            country: None,
            language: None,
        }
    }

    fn lowercase_text(&mut self) -> Option<&str> {
        let text = self.text;
        self.lowercase_text
            .get_or_insert_with(|| text.map(str::to_lowercase))
            .as_deref()
    }

    fn country(&mut self) -> Option<&str> {
        let (customer, fallback) = (self.customer, self.number_country);
        self.country
            .get_or_insert_with(|| country_of(customer).or_else(|| fallback.map(str::to_string)))
            .as_deref()
    }

    /// Whether the message's language is one of `languages`: the detected one, else (nothing
    /// detected) any of the number's.
    fn language_in(&mut self, languages: &[&'static str]) -> bool {
        match self.language() {
            Some(language) => languages.contains(&language),
            None => self
                .number_languages
                .iter()
                .any(|l| languages.contains(&l.as_str())),
        }
    }

    fn language(&mut self) -> Option<&'static str> {
        let text = self.text;
        *self
            .language
            .get_or_insert_with(|| text.and_then(language_of))
    }
}

/// Identifies the rule being validated in errors.
struct Ctx<'a> {
    index: usize,
    name: &'a str,
}

impl Ctx<'_> {
    fn err(&self, key: &str, problem: impl Into<String>) -> RuleError {
        RuleError {
            index: self.index,
            name: self.name.to_owned(),
            key: key.to_owned(),
            problem: one_line(&problem.into()),
        }
    }
}

/// `RuleError::problem` is promised to be one line (it ends up in logs and
/// admin API responses); library messages such as regex syntax errors are not.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn compile_when(
    ctx: &Ctx<'_>,
    when: &WhenConfig,
    team_exists: &dyn Fn(&str) -> bool,
) -> Result<CompiledWhen, RuleError> {
    let within_hours_of = check_team(
        ctx,
        "when.within_hours_of",
        &when.within_hours_of,
        team_exists,
    )?;
    let outside_hours_of = check_team(
        ctx,
        "when.outside_hours_of",
        &when.outside_hours_of,
        team_exists,
    )?;
    Ok(CompiledWhen {
        number: exact_values(ctx, "when.number", &when.number)?,
        message_type: exact_values(ctx, "when.message_type", &when.message_type)?,
        labels: exact_values(ctx, "when.labels", &when.labels)?,
        intent: exact_values(ctx, "when.intent", &when.intent)?,
        within_hours_of,
        outside_hours_of,
        keywords: compile_keywords(ctx, &when.keywords)?,
        regex: when
            .regex
            .as_deref()
            .map(|pattern| build_regex(pattern).map_err(|p| ctx.err("when.regex", p)))
            .transpose()?,
        country: compile_countries(ctx, &when.country)?,
        language: compile_languages(ctx, &when.language)?,
    })
}

fn check_then(
    ctx: &Ctx<'_>,
    then: &ThenConfig,
    team_exists: &dyn Fn(&str) -> bool,
) -> Result<(), RuleError> {
    if then.team.is_none() && then.priority.is_none() && then.labels.is_empty() {
        return Err(ctx.err(
            "then",
            "is empty; set at least one of team, priority, labels",
        ));
    }
    check_team(ctx, "then.team", &then.team, team_exists)?;
    for label in &then.labels {
        check_exact_value(ctx, "then.labels", label)?;
    }
    Ok(())
}

fn check_team(
    ctx: &Ctx<'_>,
    key: &str,
    team: &Option<String>,
    team_exists: &dyn Fn(&str) -> bool,
) -> Result<Option<String>, RuleError> {
    match team {
        None => Ok(None),
        Some(team) if team_exists(team) => Ok(Some(team.clone())),
        Some(team) => Err(ctx.err(key, format!("unknown team {team:?}"))),
    }
}

/// A present list must be able to match something; an empty one is almost
/// certainly a config slip, and treating it as "no condition" would widen the
/// rule instead.
fn non_empty<'v>(
    ctx: &Ctx<'_>,
    key: &str,
    values: &'v Option<Vec<String>>,
) -> Result<Option<&'v [String]>, RuleError> {
    match values {
        None => Ok(None),
        Some(list) if list.is_empty() => Err(ctx.err(key, "empty list matches nothing")),
        Some(list) => Ok(Some(list)),
    }
}

/// Values compared verbatim: surrounding whitespace would make them silently
/// never match, so it is rejected rather than trimmed.
fn check_exact_value(ctx: &Ctx<'_>, key: &str, value: &str) -> Result<(), RuleError> {
    if value.trim().is_empty() {
        Err(ctx.err(key, "contains a blank value"))
    } else if value.trim() != value {
        Err(ctx.err(key, format!("{value:?} has leading or trailing whitespace")))
    } else {
        Ok(())
    }
}

fn exact_values(
    ctx: &Ctx<'_>,
    key: &str,
    values: &Option<Vec<String>>,
) -> Result<Option<Vec<String>>, RuleError> {
    let Some(list) = non_empty(ctx, key, values)? else {
        return Ok(None);
    };
    for value in list {
        check_exact_value(ctx, key, value)?;
    }
    Ok(Some(list.to_vec()))
}

fn compile_countries(
    ctx: &Ctx<'_>,
    values: &Option<Vec<String>>,
) -> Result<Option<Vec<String>>, RuleError> {
    const KEY: &str = "when.country";
    let Some(list) = non_empty(ctx, KEY, values)? else {
        return Ok(None);
    };
    let mut codes = Vec::with_capacity(list.len());
    for value in list {
        if value.len() != 2 || !value.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ctx.err(
                KEY,
                format!("{value:?} is not an ISO 3166-1 alpha-2 code (two letters)"),
            ));
        }
        let code = value.to_ascii_uppercase();
        if !is_region(&code) {
            let hint = if code == "UK" {
                " (did you mean \"GB\"?)"
            } else {
                ""
            };
            return Err(ctx.err(
                KEY,
                format!("{value:?} is not a region with phone numbers{hint}"),
            ));
        }
        codes.push(code);
    }
    Ok(Some(codes))
}

fn compile_languages(
    ctx: &Ctx<'_>,
    values: &Option<Vec<String>>,
) -> Result<Option<Vec<&'static str>>, RuleError> {
    const KEY: &str = "when.language";
    let Some(list) = non_empty(ctx, KEY, values)? else {
        return Ok(None);
    };
    let supported = supported_languages();
    let mut codes = Vec::with_capacity(list.len());
    for value in list {
        let lower = value.to_ascii_lowercase();
        match supported.iter().find(|code| **code == lower) {
            Some(code) => codes.push(*code),
            None => {
                return Err(ctx.err(
                    KEY,
                    format!(
                        "{value:?} is not an ISO 639-1 code the language detector can produce (supported: {})",
                        supported.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(Some(codes))
}

/// All keywords of a rule become one regex over the lowercased text. A
/// keyword's words must appear adjacent (separated only by non-word
/// characters) and the whole keyword must be bounded by a non-word character
/// or the text's edge, which gives whole-word matching ("order" does not match
/// "border") even for keywords that start or end with punctuation ("c++").
fn compile_keywords(
    ctx: &Ctx<'_>,
    values: &Option<Vec<String>>,
) -> Result<Option<Regex>, RuleError> {
    const KEY: &str = "when.keywords";
    let Some(list) = non_empty(ctx, KEY, values)? else {
        return Ok(None);
    };
    let mut alternatives = Vec::with_capacity(list.len());
    for keyword in list {
        let lower = keyword.to_lowercase();
        let words: Vec<String> = lower.split_whitespace().map(regex::escape).collect();
        if words.is_empty() {
            return Err(ctx.err(KEY, "contains a blank keyword"));
        }
        alternatives.push(words.join(r"\W+"));
    }
    let pattern = format!(r"(?:^|\W)(?:{})(?:\W|$)", alternatives.join("|"));
    build_regex(&pattern)
        .map(Some)
        .map_err(|problem| ctx.err(KEY, problem))
}

fn build_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|err| match err {
            regex::Error::Syntax(msg) => {
                // The syntax message repeats the pattern with a caret marker;
                // the "error:" line is the part that reads well on one line.
                let detail = msg
                    .lines()
                    .filter_map(|line| line.trim().strip_prefix("error:"))
                    .next_back()
                    .map(str::trim)
                    .unwrap_or(msg.as_str());
                format!("invalid regex: {detail}")
            }
            regex::Error::CompiledTooBig(limit) => {
                format!("compiled regex exceeds the size limit of {limit} bytes")
            }
            other => format!("invalid regex: {other}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn teams(team: &str) -> bool {
        matches!(team, "ops" | "support" | "sales" | "de")
    }

    fn rule(name: &str, when: WhenConfig) -> RuleConfig {
        RuleConfig {
            name: name.to_owned(),
            when,
            then: ThenConfig {
                team: Some("ops".to_owned()),
                ..ThenConfig::default()
            },
        }
    }

    fn list(values: &[&str]) -> Option<Vec<String>> {
        Some(values.iter().map(|v| (*v).to_owned()).collect())
    }

    fn set(rules: Vec<RuleConfig>) -> RuleSet {
        RuleSet::compile(rules, &teams).unwrap()
    }

    fn one(when: WhenConfig) -> RuleSet {
        set(vec![rule("r", when)])
    }

    const DE_TEXT: &str = "Hallo, wo ist meine Bestellung? Ich warte seit einer Woche.";
    const ES_TEXT: &str =
        "Hola, hice un pedido la semana pasada y todavía no ha llegado. ¿Pueden revisarlo?";
    const EN_TEXT: &str =
        "Hi, I ordered a jacket last week and it still hasn't arrived. Can you check?";

    struct Msg {
        number: &'static str,
        customer: &'static str,
        text: Option<&'static str>,
        message_type: &'static str,
        labels: Vec<String>,
        intent: Option<&'static str>,
        number_country: Option<&'static str>,
        number_languages: Vec<String>,
    }

    impl Msg {
        fn text(text: &'static str) -> Self {
            Msg {
                number: "206540352242933",
                customer: "4915112345678",
                text: Some(text),
                message_type: "text",
                labels: Vec::new(),
                intent: None,
                number_country: None,
                number_languages: Vec::new(),
            }
        }

        fn input(&self) -> RouteInput<'_> {
            RouteInput {
                number: self.number,
                customer: self.customer,
                text: self.text,
                message_type: self.message_type,
                labels: &self.labels,
                intent: self.intent,
                number_country: self.number_country,
                number_languages: &self.number_languages,
            }
        }
    }

    /// The number's country and languages stand in for the customer's only when those are
    /// unknown: a customer whose phone names a country, or a text whose language is detected,
    /// is routed by its own.
    #[test]
    fn number_country_and_languages_are_defaults() {
        let rules = one(WhenConfig {
            country: list(&["DE"]),
            language: list(&["de"]),
            ..Default::default()
        });
        // No country from an id that is neither a phone nor a user id, no language from "ok".
        let mut unknown = Msg::text("ok");
        unknown.customer = "no-phone";
        assert!(!hits(&rules, &unknown));
        unknown.number_country = Some("DE");
        unknown.number_languages = vec!["de".into()];
        assert!(
            hits(&rules, &unknown),
            "the number's country and language apply"
        );
        // A known customer country or detected language is not overridden.
        let mut us = Msg::text("ok");
        us.customer = "14155550123";
        us.number_country = Some("DE");
        us.number_languages = vec!["de".into()];
        assert!(!hits(&rules, &us), "the customer's own country wins");
        let mut english = Msg::text(EN_TEXT);
        english.customer = "no-phone";
        english.number_country = Some("DE");
        english.number_languages = vec!["de".into()];
        assert!(!hits(&rules, &english), "the detected language wins");
    }

    fn open(_: &str) -> bool {
        true
    }

    fn closed(_: &str) -> bool {
        false
    }

    fn hits(rules: &RuleSet, msg: &Msg) -> bool {
        rules.route(&msg.input(), &open).is_some()
    }

    fn winner(rules: &RuleSet, msg: &Msg) -> Option<String> {
        rules.route(&msg.input(), &open).map(|m| m.rule.to_owned())
    }

    fn compile_err(rules: Vec<RuleConfig>) -> RuleError {
        RuleSet::compile(rules, &teams).unwrap_err()
    }

    // ---- single conditions ----

    #[test]
    fn empty_ruleset_routes_nothing() {
        let rules = RuleSet::empty();
        assert!(rules.is_empty());
        assert!(rules.configs().is_empty());
        assert_eq!(rules.route(&Msg::text("hi").input(), &open), None);
    }

    #[test]
    fn catch_all_rule_matches_anything() {
        let rules = one(WhenConfig::default());
        let mut msg = Msg::text("x");
        msg.text = None;
        msg.customer = "garbage";
        assert!(hits(&rules, &msg));
    }

    #[test]
    fn number_condition() {
        let rules = one(WhenConfig {
            number: list(&["206540352242933"]),
            ..Default::default()
        });
        let mut msg = Msg::text("hi");
        assert!(hits(&rules, &msg));
        msg.number = "111";
        assert!(!hits(&rules, &msg));
    }

    #[test]
    fn message_type_condition() {
        let rules = one(WhenConfig {
            message_type: list(&["image", "document"]),
            ..Default::default()
        });
        let mut msg = Msg::text("hi");
        assert!(!hits(&rules, &msg));
        msg.message_type = "document";
        assert!(hits(&rules, &msg));
    }

    #[test]
    fn labels_condition_any_of() {
        let rules = one(WhenConfig {
            labels: list(&["vip", "gold"]),
            ..Default::default()
        });
        let mut msg = Msg::text("hi");
        assert!(!hits(&rules, &msg));
        msg.labels = vec!["new".to_owned(), "gold".to_owned()];
        assert!(hits(&rules, &msg));
        msg.labels = vec!["VIP".to_owned()];
        assert!(!hits(&rules, &msg), "labels compare exactly");
    }

    #[test]
    fn intent_condition() {
        let rules = one(WhenConfig {
            intent: list(&["order_status", "refund"]),
            ..Default::default()
        });
        let mut msg = Msg::text("hi");
        assert!(!hits(&rules, &msg), "no intent never matches");
        msg.intent = Some("greeting");
        assert!(!hits(&rules, &msg));
        msg.intent = Some("refund");
        assert!(hits(&rules, &msg));
    }

    #[test]
    fn hours_conditions() {
        let within = one(WhenConfig {
            within_hours_of: Some("support".to_owned()),
            ..Default::default()
        });
        let outside = one(WhenConfig {
            outside_hours_of: Some("support".to_owned()),
            ..Default::default()
        });
        let msg = Msg::text("hi");
        assert!(within.route(&msg.input(), &open).is_some());
        assert!(within.route(&msg.input(), &closed).is_none());
        assert!(outside.route(&msg.input(), &open).is_none());
        assert!(outside.route(&msg.input(), &closed).is_some());

        let asked = std::cell::RefCell::new(Vec::new());
        let record = |team: &str| {
            asked.borrow_mut().push(team.to_owned());
            true
        };
        within.route(&msg.input(), &record);
        assert_eq!(*asked.borrow(), vec!["support".to_owned()]);
    }

    #[test]
    fn keywords_whole_word_case_insensitive() {
        let rules = one(WhenConfig {
            keywords: list(&["bestellung", "order"]),
            ..Default::default()
        });
        assert!(hits(&rules, &Msg::text("Wo ist meine Bestellung?")));
        assert!(hits(&rules, &Msg::text("ORDER")));
        assert!(hits(&rules, &Msg::text("my order, please")));
        assert!(!hits(&rules, &Msg::text("crossing the border")));
        assert!(!hits(&rules, &Msg::text("orders")));
        assert!(!hits(&rules, &Msg::text("Bestellungen")));
        let mut msg = Msg::text("x");
        msg.text = None;
        assert!(!hits(&rules, &msg));
    }

    #[test]
    fn keywords_unicode() {
        let rules = one(WhenConfig {
            keywords: list(&["STRASSE", "Ärger", "заказ"]),
            ..Default::default()
        });
        assert!(hits(&rules, &Msg::text("viel ärger hier")));
        assert!(hits(&rules, &Msg::text("Где мой ЗАКАЗ?")));
        assert!(!hits(&rules, &Msg::text("заказы")));
        assert!(hits(
            &rules,
            &Msg::text("Hauptstrasse ist... nein: Strasse!")
        ));
    }

    #[test]
    fn keywords_multi_word_must_be_adjacent() {
        let rules = one(WhenConfig {
            keywords: list(&["refund please"]),
            ..Default::default()
        });
        assert!(hits(&rules, &Msg::text("I want a Refund  please!")));
        assert!(hits(&rules, &Msg::text("refund, please")));
        assert!(!hits(&rules, &Msg::text("refund now please")));
        assert!(!hits(&rules, &Msg::text("refund pleased")));
        assert!(!hits(&rules, &Msg::text("please refund")));
    }

    #[test]
    fn keywords_with_punctuation_and_regex_metachars() {
        let rules = one(WhenConfig {
            keywords: list(&["c++", "a.b"]),
            ..Default::default()
        });
        assert!(hits(&rules, &Msg::text("I love C++!")));
        assert!(hits(&rules, &Msg::text("a.b")));
        assert!(!hits(&rules, &Msg::text("axb")));
        assert!(!hits(&rules, &Msg::text("xc++")));
    }

    #[test]
    fn regex_condition() {
        let rules = one(WhenConfig {
            regex: Some(r"(?i)order\s*#?\d+".to_owned()),
            ..Default::default()
        });
        assert!(hits(&rules, &Msg::text("Where is ORDER #123?")));
        assert!(hits(&rules, &Msg::text("order42")));
        assert!(!hits(&rules, &Msg::text("where is my order?")));
        let mut msg = Msg::text("x");
        msg.text = None;
        assert!(!hits(&rules, &msg));
    }

    #[test]
    fn country_condition_any_case() {
        let rules = one(WhenConfig {
            country: list(&["de", "At"]),
            ..Default::default()
        });
        let mut msg = Msg::text("hi");
        assert!(hits(&rules, &msg));
        msg.customer = "436641234567";
        assert!(hits(&rules, &msg));
        msg.customer = "14155550123";
        assert!(!hits(&rules, &msg));
        msg.customer = "garbage";
        assert!(!hits(&rules, &msg));
    }

    #[test]
    fn language_condition() {
        let rules = one(WhenConfig {
            language: list(&["DE", "es"]),
            ..Default::default()
        });
        assert!(hits(&rules, &Msg::text(DE_TEXT)));
        assert!(hits(&rules, &Msg::text(ES_TEXT)));
        assert!(!hits(&rules, &Msg::text(EN_TEXT)));
        assert!(!hits(&rules, &Msg::text("ok")));
        let mut msg = Msg::text("x");
        msg.text = None;
        assert!(!hits(&rules, &msg));
    }

    // ---- combinations and ordering ----

    #[test]
    fn all_given_conditions_must_match() {
        let rules = one(WhenConfig {
            country: list(&["DE", "AT"]),
            language: list(&["de"]),
            keywords: list(&["bestellung"]),
            message_type: list(&["text"]),
            ..Default::default()
        });
        let msg = Msg::text(DE_TEXT);
        assert!(hits(&rules, &msg));

        let mut other_country = Msg::text(DE_TEXT);
        other_country.customer = "14155550123";
        assert!(!hits(&rules, &other_country));

        assert!(!hits(
            &rules,
            &Msg::text("Hallo, wo ist mein Paket? Ich warte seit einer Woche.")
        ));

        let mut other_type = Msg::text(DE_TEXT);
        other_type.message_type = "image";
        assert!(!hits(&rules, &other_type));

        let english = Msg::text("Hello, where is my bestellung? I have been waiting for a week.");
        assert!(!hits(&rules, &english));
    }

    #[test]
    fn full_example_rule() {
        let rules = one(WhenConfig {
            country: list(&["DE", "AT"]),
            language: list(&["de"]),
            keywords: list(&["bestellung"]),
            regex: Some(r"(?i)order\s*#?\d+".to_owned()),
            intent: list(&["order_status"]),
            number: list(&["206540352242933"]),
            message_type: list(&["text"]),
            within_hours_of: Some("support".to_owned()),
            outside_hours_of: None,
            labels: list(&["vip"]),
        });
        let mut msg = Msg::text(
            "Hallo, wo ist meine Bestellung Order #4711? Ich warte schon seit einer Woche darauf.",
        );
        msg.intent = Some("order_status");
        msg.labels = vec!["vip".to_owned()];
        assert!(rules.route(&msg.input(), &open).is_some());
        assert!(rules.route(&msg.input(), &closed).is_none());
        msg.labels.clear();
        assert!(rules.route(&msg.input(), &open).is_none());
    }

    #[test]
    fn first_match_wins_and_order_matters() {
        let specific = RuleConfig {
            name: "vip".to_owned(),
            when: WhenConfig {
                labels: list(&["vip"]),
                ..Default::default()
            },
            then: ThenConfig {
                team: Some("sales".to_owned()),
                priority: Some(Priority::Urgent),
                labels: vec!["vip-routed".to_owned()],
            },
        };
        let general = RuleConfig {
            name: "everything".to_owned(),
            when: WhenConfig::default(),
            then: ThenConfig {
                team: Some("support".to_owned()),
                ..Default::default()
            },
        };
        let mut msg = Msg::text("hi");
        msg.labels = vec!["vip".to_owned()];

        let specific_first = set(vec![specific.clone(), general.clone()]);
        assert_eq!(
            specific_first.route(&msg.input(), &open),
            Some(RouteMatch {
                rule: "vip",
                team: Some("sales"),
                priority: Some(Priority::Urgent),
                labels: &["vip-routed".to_owned()],
            })
        );
        let general_first = set(vec![general, specific]);
        assert_eq!(
            general_first.route(&msg.input(), &open),
            Some(RouteMatch {
                rule: "everything",
                team: Some("support"),
                priority: None,
                labels: &[],
            })
        );

        msg.labels.clear();
        assert_eq!(winner(&specific_first, &msg).as_deref(), Some("everything"));
    }

    #[test]
    fn no_match_is_none() {
        let rules = set(vec![
            rule(
                "a",
                WhenConfig {
                    intent: list(&["refund"]),
                    ..Default::default()
                },
            ),
            rule(
                "b",
                WhenConfig {
                    country: list(&["BR"]),
                    ..Default::default()
                },
            ),
        ]);
        assert_eq!(rules.route(&Msg::text(DE_TEXT).input(), &open), None);
    }

    #[test]
    fn detection_is_lazy_and_memoised() {
        let rules = set(vec![
            rule(
                "other number",
                WhenConfig {
                    number: list(&["999"]),
                    country: list(&["DE"]),
                    language: list(&["de"]),
                    ..Default::default()
                },
            ),
            rule(
                "keywords",
                WhenConfig {
                    keywords: list(&["bestellung"]),
                    ..Default::default()
                },
            ),
        ]);
        let msg = Msg::text(DE_TEXT);
        let input = msg.input();
        let mut derived = Derived::new(&input);
        let found = rules.route_with(&input, &open, &mut derived);
        assert_eq!(found.map(|m| m.rule), Some("keywords"));
        assert!(derived.country.is_none());
        assert!(derived.language.is_none());

        let rules = set(vec![
            rule(
                "us",
                WhenConfig {
                    country: list(&["US"]),
                    ..Default::default()
                },
            ),
            rule(
                "de",
                WhenConfig {
                    country: list(&["DE"]),
                    ..Default::default()
                },
            ),
        ]);
        let mut derived = Derived::new(&input);
        let found = rules.route_with(&input, &open, &mut derived);
        assert_eq!(found.map(|m| m.rule), Some("de"));
        assert_eq!(derived.country, Some(Some("DE".to_owned())));
        assert!(derived.language.is_none());
    }

    // ---- compile errors ----

    fn assert_err(err: &RuleError, index: usize, key: &str, needle: &str) {
        assert_eq!(err.index, index, "{err}");
        assert_eq!(err.key, key, "{err}");
        assert!(err.problem.contains(needle), "{err}");
        assert!(!err.problem.contains('\n'), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
    }

    #[test]
    fn unknown_team_in_then() {
        let mut r = rule("r", WhenConfig::default());
        r.then.team = Some("nope".to_owned());
        let err = compile_err(vec![rule("ok", WhenConfig::default()), r]);
        assert_err(&err, 1, "then.team", "\"nope\"");
        assert_eq!(
            err.to_string(),
            "rule 1 (\"r\"): then.team: unknown team \"nope\""
        );
    }

    #[test]
    fn unknown_team_in_hours() {
        let err = compile_err(vec![rule(
            "r",
            WhenConfig {
                within_hours_of: Some("nope".to_owned()),
                ..Default::default()
            },
        )]);
        assert_err(&err, 0, "when.within_hours_of", "unknown team");
        let err = compile_err(vec![rule(
            "r",
            WhenConfig {
                outside_hours_of: Some("nope".to_owned()),
                ..Default::default()
            },
        )]);
        assert_err(&err, 0, "when.outside_hours_of", "unknown team");
    }

    #[test]
    fn rules_that_cannot_match_are_accepted_with_a_warning() {
        // The contract's example names the same team for both; it must load.
        let rules = RuleSet::compile(
            vec![
                rule(
                    "both",
                    WhenConfig {
                        within_hours_of: Some("support".to_owned()),
                        outside_hours_of: Some("support".to_owned()),
                        ..Default::default()
                    },
                ),
                rule(
                    "intent",
                    WhenConfig {
                        intent: Some(vec!["order_status".to_owned()]),
                        ..Default::default()
                    },
                ),
                rule(
                    "fine",
                    WhenConfig {
                        within_hours_of: Some("support".to_owned()),
                        outside_hours_of: Some("sales".to_owned()),
                        ..Default::default()
                    },
                ),
            ],
            &teams,
        )
        .expect("valid");
        let w = rules.warnings(None);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("\"both\"") && w[0].contains("never matches"),
            "{w:?}"
        );
        assert!(
            w[1].contains("\"intent\"") && w[1].contains("[automation]"),
            "{w:?}"
        );
        // With automation detecting the intent, the rule can match: no warning for it.
        let w = rules.warnings(Some(&["order_status", "refund"]));
        assert_eq!(w.len(), 1, "{w:?}");
        // An intent automation does not configure still never matches.
        let w = rules.warnings(Some(&["refund"]));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[1].contains("\"order_status\""), "{w:?}");
        assert!(rules.uses_intent());
        assert!(!RuleSet::empty().uses_intent());
    }

    #[test]
    fn bad_regex() {
        let err = compile_err(vec![rule(
            "r",
            WhenConfig {
                regex: Some("order(".to_owned()),
                ..Default::default()
            },
        )]);
        assert_err(&err, 0, "when.regex", "invalid regex");
    }

    #[test]
    fn oversized_regex() {
        let err = compile_err(vec![rule(
            "r",
            WhenConfig {
                regex: Some(r"\w{1000}\w{1000}\w{1000}".to_owned()),
                ..Default::default()
            },
        )]);
        assert_err(&err, 0, "when.regex", "size limit");
    }

    #[test]
    fn bad_country() {
        for (value, needle) in [
            ("DEU", "alpha-2"),
            ("D", "alpha-2"),
            ("1A", "alpha-2"),
            ("ÄÖ", "alpha-2"),
            ("XX", "not a region"),
            ("uk", "GB"),
        ] {
            let err = compile_err(vec![rule(
                "r",
                WhenConfig {
                    country: list(&["DE", value]),
                    ..Default::default()
                },
            )]);
            assert_err(&err, 0, "when.country", needle);
            assert!(err.problem.contains(value), "{err}");
        }
    }

    #[test]
    fn bad_language() {
        for value in ["deu", "xx", "german", "", "gsw"] {
            let err = compile_err(vec![rule(
                "r",
                WhenConfig {
                    language: list(&["de", value]),
                    ..Default::default()
                },
            )]);
            assert_err(&err, 0, "when.language", &format!("{value:?}"));
            assert!(err.problem.contains("supported: af, ak, am"), "{err}");
        }
    }

    #[test]
    fn duplicate_and_blank_names() {
        let err = compile_err(vec![
            rule("a", WhenConfig::default()),
            rule("b", WhenConfig::default()),
            rule("a", WhenConfig::default()),
        ]);
        assert_err(&err, 2, "name", "rule 0");
        let err = compile_err(vec![rule("  ", WhenConfig::default())]);
        assert_err(&err, 0, "name", "blank");
    }

    #[test]
    fn empty_then() {
        let mut r = rule("r", WhenConfig::default());
        r.then = ThenConfig::default();
        assert_err(&compile_err(vec![r]), 0, "then", "empty");

        let mut labels_only = rule("r", WhenConfig::default());
        labels_only.then = ThenConfig {
            labels: vec!["x".to_owned()],
            ..Default::default()
        };
        set(vec![labels_only]);
        let mut priority_only = rule("r", WhenConfig::default());
        priority_only.then = ThenConfig {
            priority: Some(Priority::High),
            ..Default::default()
        };
        set(vec![priority_only]);
    }

    #[test]
    fn empty_lists_and_blank_values() {
        let cases: Vec<(&str, WhenConfig)> = vec![
            (
                "when.country",
                WhenConfig {
                    country: list(&[]),
                    ..Default::default()
                },
            ),
            (
                "when.language",
                WhenConfig {
                    language: list(&[]),
                    ..Default::default()
                },
            ),
            (
                "when.keywords",
                WhenConfig {
                    keywords: list(&[]),
                    ..Default::default()
                },
            ),
            (
                "when.intent",
                WhenConfig {
                    intent: list(&[]),
                    ..Default::default()
                },
            ),
            (
                "when.number",
                WhenConfig {
                    number: list(&[]),
                    ..Default::default()
                },
            ),
            (
                "when.message_type",
                WhenConfig {
                    message_type: list(&[]),
                    ..Default::default()
                },
            ),
            (
                "when.labels",
                WhenConfig {
                    labels: list(&[]),
                    ..Default::default()
                },
            ),
        ];
        for (key, when) in cases {
            assert_err(
                &compile_err(vec![rule("r", when)]),
                0,
                key,
                "matches nothing",
            );
        }
        let err = compile_err(vec![rule(
            "r",
            WhenConfig {
                keywords: list(&["ok", "  "]),
                ..Default::default()
            },
        )]);
        assert_err(&err, 0, "when.keywords", "blank");
        let err = compile_err(vec![rule(
            "r",
            WhenConfig {
                labels: list(&["vip "]),
                ..Default::default()
            },
        )]);
        assert_err(&err, 0, "when.labels", "whitespace");
        let mut r = rule("r", WhenConfig::default());
        r.then.labels = vec![String::new()];
        assert_err(&compile_err(vec![r]), 0, "then.labels", "blank");
    }

    // ---- config (de)serialisation ----

    #[derive(Debug, Deserialize)]
    struct Root {
        routing: Routing,
    }

    #[derive(Debug, Deserialize)]
    struct Routing {
        rules: Vec<RuleConfig>,
    }

    const EXAMPLE: &str = r#"
[[routing.rules]]
name = "german orders"
when = { country = ["DE", "AT"], language = ["de"], keywords = ["bestellung"], regex = "(?i)order\\s*#?\\d+", intent = ["order_status"], number = ["206540352242933"], message_type = ["text"], within_hours_of = "support", outside_hours_of = "sales", labels = ["vip"] }
then = { team = "ops", priority = "high", labels = ["order"] }

# TOML 1.0 (toml 0.8) forbids newlines inside inline tables; long `when`s
# can use a sub-table instead.
[[routing.rules]]
name = "refunds"
[routing.rules.when]
keywords = ["refund please"]
intent = ["refund"]
[routing.rules.then]
priority = "urgent"

[[routing.rules]]
name = "fallback"
then = { team = "support" }
"#;

    #[test]
    fn toml_example_parses_and_compiles() {
        let root: Root = toml::from_str(EXAMPLE).unwrap();
        let rules = root.routing.rules;
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[1].when.intent, list(&["refund"]));
        assert_eq!(rules[1].then.priority, Some(Priority::Urgent));
        assert_eq!(rules[0].when.regex.as_deref(), Some(r"(?i)order\s*#?\d+"));
        assert_eq!(rules[0].then.priority, Some(Priority::High));
        assert_eq!(rules[2].when, WhenConfig::default());
        let compiled = RuleSet::compile(rules.clone(), &teams).unwrap();
        assert_eq!(compiled.configs(), rules.as_slice());
        assert!(!compiled.is_empty());
        assert_eq!(
            winner(&compiled, &Msg::text("hi")).as_deref(),
            Some("fallback")
        );

        let round_trip: RuleConfig = toml::from_str(&toml::to_string(&rules[0]).unwrap()).unwrap();
        assert_eq!(round_trip, rules[0]);
    }

    #[test]
    fn toml_unknown_fields_are_rejected() {
        let unknown_when = r#"
name = "r"
when = { contry = ["DE"] }
then = { team = "ops" }
"#;
        let err = toml::from_str::<RuleConfig>(unknown_when).unwrap_err();
        assert!(err.to_string().contains("contry"), "{err}");

        let unknown_then = r#"
name = "r"
then = { team = "ops", prio = "high" }
"#;
        assert!(toml::from_str::<RuleConfig>(unknown_then).is_err());

        let unknown_rule = r#"
name = "r"
then = { team = "ops" }
enabled = true
"#;
        assert!(toml::from_str::<RuleConfig>(unknown_rule).is_err());

        let bad_priority = r#"
name = "r"
then = { priority = "critical" }
"#;
        assert!(toml::from_str::<RuleConfig>(bad_priority).is_err());
    }
}
