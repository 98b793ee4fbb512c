//! Any text: the policy parser reports diagnostics inside the text and never panics; what it accepts
//! prints canonically and reads back to the same model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let checked = rules::check_policy(text);
    for d in &checked.diagnostics.0 {
        assert!(d.span.end <= text.len());
        let _ = d.render("fuzz.dfw", text);
    }
    if !checked.diagnostics.has_errors() {
        let printed = checked.policy.to_string();
        assert_eq!(rules::parse_policy(&printed).ok(), Some(checked.policy));
    }
});
