//! `not_a_strategy`: a valid component that exports some other world. The host's tests
//! check that it is refused with a clear error instead of being run.

wit_bindgen::generate!({
    inline: "
        package test:other@0.1.0;
        world other {
            export hello: func() -> string;
        }
    ",
});

struct NotAStrategy;

impl Guest for NotAStrategy {
    fn hello() -> String {
        "hello".into()
    }
}

export!(NotAStrategy);
