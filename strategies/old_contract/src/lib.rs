//! `old_contract`: a component built against the previous contract, `dpone:strategy@0.1.0`
//! (its `log` interface, as every 0.1 strategy imported it). The host's tests check that it
//! is refused with an error naming both versions instead of failing to link.

// Generated bindings define the component's export functions, which need `unsafe`.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
    inline: "
        package dpone:strategy@0.1.0;
        interface log {
            enum level { debug, info, warn, error }
            log: func(level: level, message: string);
        }
        world strategy {
            import log;
            export run: func() -> string;
        }
    ",
    });
}

use bindings::Guest;
use bindings::dpone::strategy::log;

struct OldContract;

impl Guest for OldContract {
    fn run() -> String {
        log::log(log::Level::Info, "built against 0.1.0");
        "ran".into()
    }
}

#[allow(unsafe_code)]
mod export {
    use super::OldContract;
    crate::bindings::export!(OldContract with_types_in crate::bindings);
}
