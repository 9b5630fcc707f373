//! `not_a_strategy`: a valid component that exports some other world. The host's tests
//! check that it is refused with a clear error instead of being run.

// Generated bindings define the component's export functions, which need `unsafe`.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
    inline: "
        package test:other@0.1.0;
        world other {
            export hello: func() -> string;
        }
    ",
    });
}

use bindings::Guest;

struct NotAStrategy;

impl Guest for NotAStrategy {
    fn hello() -> String {
        "hello".into()
    }
}

#[allow(unsafe_code)]
mod export {
    use super::NotAStrategy;
    crate::bindings::export!(NotAStrategy with_types_in crate::bindings);
}
