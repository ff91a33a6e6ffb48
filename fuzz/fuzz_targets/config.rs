//! Fuzz target: the config loader, parse and validation from TOML text
//! ([`switchboard::Config::from_toml_str`], what `Config::load` runs on the file's text).
//!
//! Checked beyond "never panics": a refusal is the one line the operator sees at start-up
//! (exit 2), never a multi-line message; an accepted config has the addresses validation
//! promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text) {
        Ok(config) => {
            assert!(config.listen_addr().is_ok());
            assert!(config.api_listen_addr().is_ok());
        }
        Err(e) => {
            let line = e.to_string();
            // Every character that ends a line somewhere: terminals, journald, log shippers.
            let breaks = |c: char| {
                matches!(
                    c,
                    '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
                )
            };
            assert!(!line.chars().any(breaks), "{line:?}");
        }
    }
});
