//! The login body parser, form and JSON. Oracle: no panic; a JSON answer is an object's
//! string/number members or a 400.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::auth::login::{parse_credentials, Style};

fuzz_target!(|data: &[u8]| {
    let _ = parse_credentials(Style::Form, data);
    if let Ok(fields) = parse_credentials(Style::Json, data) {
        let parsed: serde_json::Value = serde_json::from_slice(data).expect("accepted JSON parses");
        assert!(parsed.is_object());
        assert!(fields.len() <= parsed.as_object().map_or(0, |o| o.len()));
    }
});
